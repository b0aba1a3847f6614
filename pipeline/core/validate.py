"""A dataset directory is checked as it is read, because it is an interface.

Users copy, share, hand-edit and truncate dataset directories, and DVC caches them. A
stage that trusted one would crash with a traceback on a truncated part, export NaN
boxes as invalid JSON, or follow a ``file`` such as ``/etc/passwd`` out of the images
root. Every rule is checked here, once, column-wise, and the first violation is one
line naming the directory, the part and the row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.core import arrow_kernels as kernels
from pipeline.core.errors import UserError
from pipeline.core.limits import SEE, first_over
from pipeline.core.names import unsafe_names
from pipeline.core.string_hash import hashable, repeats_possible

REBUILD = "rebuild it with the stage that wrote it"


def damaged(path: Path, what: str) -> UserError:
    return UserError(f"dataset {path} is damaged: {what}; {REBUILD}")


def check_manifest(path: Path, manifest) -> dict:
    """The manifest's shape: an object, ``sources`` a mapping of source -> {images_root}."""
    if not isinstance(manifest, dict):
        raise damaged(path, "manifest.json is not a JSON object")
    sources = manifest.get("sources", {})
    if not isinstance(sources, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in sources.items()
    ):
        raise damaged(path, "manifest.json 'sources' is not a mapping of source -> {images_root}")
    for name, meta in sources.items():
        root = meta.get("images_root")
        if root is not None and (not isinstance(root, str) or "\x00" in root):
            raise damaged(path, f"manifest.json source {name!r} has an invalid images_root")
    counts = manifest.get("counts")
    if counts is not None:
        ints = ("images_in", "images_kept", "boxes_in", "boxes_kept")
        maps = ("images_rejected", "boxes_rejected")
        ok = isinstance(counts, dict) and all(_is_count(counts.get(k)) for k in ints)
        ok = ok and all(
            isinstance(counts.get(k), dict) and all(map(_is_count, counts[k].values()))
            for k in maps
        )
        if not ok:
            raise damaged(path, "manifest.json 'counts' is malformed")
        added = {k: counts.get(f"{k}_added", {}) for k in ("images", "boxes")}
        if not all(isinstance(a, dict) and all(map(_is_count, a.values())) for a in added.values()):
            raise damaged(path, "manifest.json 'counts' is malformed")
        for kind in ("images", "boxes"):
            total = counts[f"{kind}_kept"] + sum(counts[f"{kind}_rejected"].values())
            if counts[f"{kind}_in"] + sum(added[kind].values()) != total:
                raise damaged(path, f"manifest.json counts do not add up for {kind}")
    parts = manifest.get("parts")
    if parts is not None and not (
        isinstance(parts, list)
        and all(
            isinstance(p, dict) and isinstance(p.get("file"), str) and _is_count(p.get("rows"))
            for p in parts
        )
    ):
        raise damaged(path, "manifest.json 'parts' is malformed")
    return manifest


def check_schema(
    path: Path, where: str, found: pa.Schema, schema: pa.Schema, optional=frozenset()
) -> None:
    """Exactly the schema's columns, each of the same kind (an edit with pandas writes
    int64 sizes and large strings, which convert without loss; a string width does not).

    ``optional`` names columns and struct fields that may be absent (added to the schema
    after datasets were written without them); they read back as nulls.
    """
    extra = [n for n in found.names if n not in schema.names]
    if extra:
        raise damaged(path, f"{where} has an unexpected column {extra[0]!r}")
    missing = [n for n in schema.names if n not in found.names and n not in optional]
    if missing:
        raise damaged(path, f"{where} has no column {missing[0]!r}")
    for field in schema:
        if field.name not in found.names:
            continue
        got = found.field(field.name).type
        if not _same_kind(got, field.type, optional):
            raise damaged(path, f"{where} column {field.name!r} is {got}, expected {field.type}")


def conform(path: Path, where: str, table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` (of a checked schema) in exactly ``schema``'s types, non-nullables present."""
    table = table.select(schema.names)
    if not table.schema.equals(schema):
        try:
            table = table.cast(schema, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise damaged(path, f"{where}: {str(e).splitlines()[0]}") from None
    for field, column in zip(schema, table.columns):
        if not field.nullable and column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise damaged(path, f"{where} row {row}: {field.name!r} is missing")
    return table


def check_rows(path: Path, where: str, table: pa.Table) -> None:
    """Row rules on whatever record columns were read."""
    names = table.column_names
    ident = table.column("image_id") if "image_id" in names else None

    def fail(row: int, what: str) -> UserError:
        who = f" (image_id {ident[row].as_py()!r})" if ident is not None else ""
        return damaged(path, f"{where} row {row}{who}: {what}")

    if "file" in names:
        bad = np.flatnonzero(unsafe_names(table.column("file")))
        if bad.size:
            row = int(bad[0])
            raise fail(
                row,
                f"file {table.column('file')[row].as_py()!r} is not a safe "
                "relative path inside the images root",
            )
    for side in ("width", "height"):
        if side in names:
            values = table.column(side).to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(values <= 0)
            if bad.size:
                raise fail(int(bad[0]), f"{side} {int(values[bad[0]])} is not a positive size")
    for column, what in (("boxes", "box"), ("crowd", "crowd region")):
        if column in names:
            _check_boxes(table.column(column), fail, what)
    over = first_over(table)
    if over is not None:
        row, why = over
        who = f" (image_id {ident[row].as_py()!r})" if ident is not None else ""
        raise UserError(
            f"dataset {path} holds an image over groundset's limits: {where} row {row}{who}: "
            f"{why} ({SEE})"
        )


def _check_boxes(column: pa.ChunkedArray, fail, what: str = "box") -> None:
    """Finite boxes inside the unit square, on the stored float32 values chunk by chunk;
    the owning row and the box's index are looked up only for a failure (building them
    for every box was most of the cost of reading a dataset)."""
    start = 0
    for lists in column.chunks:
        lists = kernels.fill_null(lists, []) if lists.null_count else lists
        offsets = np.asarray(lists.offsets, dtype=np.int64)
        offsets = offsets - offsets[0]
        fields = kernels.list_flatten(lists)
        x0, y0, x1, y1 = (
            fields.field(k).to_numpy(zero_copy_only=False) for k in ("x0", "y0", "x1", "y1")
        )
        # the bounds alone rule out NaN (every comparison with it is false) and the
        # infinities (0 <= x0 < x1 <= 1 leaves none): no separate isfinite passes
        ok = x0 >= 0
        ok &= y0 >= 0
        ok &= x1 <= 1
        ok &= y1 <= 1
        ok &= x0 < x1
        ok &= y0 < y1
        bad = np.flatnonzero(~ok)
        if bad.size:
            k = int(bad[0])
            row = int(np.searchsorted(offsets, k, side="right") - 1)
            box = f"({float(x0[k]):g}, {float(y0[k]):g}, {float(x1[k]):g}, {float(y1[k]):g})"
            raise fail(
                start + row,
                f"{what} {k - int(offsets[row])} {box} is not a finite box "
                "with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1",
            )
        if fields.type.get_field_index("area") >= 0:  # null, or a finite area >= 0
            column = fields.field("area")
            area = column.to_numpy(zero_copy_only=False)  # nulls read as NaN
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(area) & (area >= 0)
            bad = np.flatnonzero(~ok & ~kernels.is_null(column).to_numpy(zero_copy_only=False))
            if bad.size:
                k = int(bad[0])
                row = int(np.searchsorted(offsets, k, side="right") - 1)
                raise fail(
                    start + row,
                    f"{what} {k - int(offsets[row])} area {float(area[k]):g} is not a "
                    "finite area >= 0",
                )
        start += len(lists)


def check_unique_ids(path: Path, ids: pa.ChunkedArray | pa.Array, where_of) -> None:
    """``image_id`` is unique across all parts; ``where_of(row)`` names the part and row.

    Sorted 64-bit hashes clear the usual case in 16 bytes an id (``string_hash``);
    Arrow's ``unique`` holds a copy of every id in its hash table, so it runs only when
    two hashes are equal, to tell a repeat from a collision and to find its row."""
    if hashable(ids) and not repeats_possible(ids):
        return
    # image_id is non-nullable (conform): the unique count is the distinct-id count
    if len(ids) == len(kernels.unique(ids)):
        return
    codes = kernels.one_array(kernels.dictionary_encode(ids))
    idx = codes.indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(idx, return_index=True)
    seen = np.zeros(len(idx), bool)
    seen[first] = True
    row = int(np.flatnonzero(~seen)[0])
    raise damaged(path, f"{where_of(row)}: image_id {ids[row].as_py()!r} appears twice")


def _same_kind(got: pa.DataType, want: pa.DataType, optional=frozenset()) -> bool:
    t = pa.types
    if got.equals(want) or t.is_null(got):
        return True
    for kind in (t.is_integer, t.is_floating):
        if kind(want):
            return kind(got)
    if t.is_string(want) or t.is_large_string(want):
        return t.is_string(got) or t.is_large_string(got)
    if t.is_list(want) or t.is_large_list(want):
        return (t.is_list(got) or t.is_large_list(got)) and _same_kind(
            got.value_type, want.value_type, optional
        )
    if t.is_struct(want):
        if not t.is_struct(got):
            return False
        have, need = {f.name for f in got}, {f.name for f in want}
        if not have <= need or not need - have <= set(optional):
            return False
        return all(_same_kind(got.field(n).type, want.field(n).type, optional) for n in have)
    return False


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
