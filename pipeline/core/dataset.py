"""Dataset directories: the one on-disk contract between stages.

A dataset directory holds ``records/part-*.parquet`` (one row per image),
``rejects.parquet`` (one row per rejected image or box) and ``manifest.json``. A stage
writes the whole directory under a temporary name and renames it into place, so a
killed stage never leaves a half-written dataset that a later stage would trust.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import arrow_kernels as kernels
from pipeline.core.errors import UserError
from pipeline.core.hashing import sha256_file
from pipeline.core.records import (
    BOX,
    BOX_TYPE,
    IMAGE,
    OPTIONAL_BOX_FIELDS,
    OPTIONAL_COLUMNS,
    RECORD_SCHEMA,
    REJECT_SCHEMA,
    empty_rejects,
    fill_optional,
)
from pipeline.core.validate import (
    check_manifest,
    check_rows,
    check_schema,
    check_unique_ids,
    conform,
    damaged,
)

ROWS_PER_PART = 200_000
BOX_COORDS = ("x0", "y0", "x1", "y1")  # ``box_fields`` for work on the geometry only
MANIFEST = "manifest.json"
REJECTS = "rejects.parquet"
RECORDS = "records"
ROOT_KEYS = ("images_root", "labels_root")  # folders a source names, stored relative


def input_entry(path: str | Path) -> dict:
    """Describe an input for the manifest: files get a sha256, directories a listing hash."""
    p = Path(path)
    if p.is_file():
        return {"path": str(p), "sha256": sha256_file(p)}
    if p.is_dir() and (p / MANIFEST).is_file():
        return {"path": str(p), "sha256": sha256_file(p / MANIFEST)}
    return {"path": str(p), "sha256": None}


def _refuse_total_loss(stage: str, counts: dict) -> None:
    """A run that keeps nothing of a non-empty input is a mistake to report, not a result:
    a wrong folder or option, rarely a dataset that is really all bad."""
    if counts["images_in"] and not counts["images_kept"]:
        why = sorted(counts["images_rejected"].items(), key=lambda kv: -kv[1])
        reasons = ", ".join(f"{n} {r}" for r, n in why[:3]) or "no reason recorded"
        raise UserError(
            f"{stage} kept none of the {counts['images_in']} input images ({reasons}); "
            "nothing was written"
        )


def _relative_roots(sources: dict, out: Path) -> dict:
    """Images roots relative to the dataset directory: the same inputs give the same bytes
    wherever the repository lives, and a clone or a move keeps finding the images."""
    here = os.path.abspath(out)
    return {
        name: {
            **meta,
            **{
                k: os.path.relpath(os.path.abspath(meta[k]), here)
                for k in ROOT_KEYS
                if isinstance(meta.get(k), str) and meta[k]
            },
        }
        for name, meta in sources.items()
    }


def versions() -> dict:
    out = {"python": sys.version.split()[0], "pyarrow": pa.__version__}
    from importlib.metadata import PackageNotFoundError, version

    try:
        out["groundset"] = version("groundset")
    except PackageNotFoundError:  # running from a source tree without install metadata
        out["groundset"] = "unknown"
    return out


def count_rejects(rejects: pa.Table) -> tuple[dict, dict]:
    """Reject counts by reason, separately for images and boxes (grouped in Arrow)."""
    grouped = (
        rejects.select(["kind", "reason"])
        .group_by(["kind", "reason"])
        .aggregate([([], "count_all")])
    )
    by_kind: dict = {IMAGE: {}, BOX: {}}
    for kind, reason, n in zip(
        *(grouped.column(c).to_pylist() for c in ("kind", "reason", "count_all"))
    ):
        if kind in by_kind:
            by_kind[kind][reason] = n
    return dict(sorted(by_kind[IMAGE].items())), dict(sorted(by_kind[BOX].items()))


def n_boxes(records: pa.Table) -> int:
    return int(kernels.total(kernels.list_value_length(records.column("boxes"))).as_py() or 0)


def make_counts(records: pa.Table, rejects: pa.Table, images_in: int, boxes_in: int) -> dict:
    """The manifest's ``counts``, checked against the two accounting identities.

    An identity that does not hold is a bug in the stage, not in the user's data, so it
    raises AssertionError rather than UserError.
    """
    images_rejected, boxes_rejected = count_rejects(rejects)
    counts = {
        "images_in": int(images_in),
        "images_kept": records.num_rows,
        "images_rejected": images_rejected,
        "boxes_in": int(boxes_in),
        "boxes_kept": n_boxes(records),
        "boxes_rejected": boxes_rejected,
    }
    check_counts(counts)
    return counts


def check_counts(counts: dict) -> None:
    """in + added == kept + rejected, for images and boxes. ``*_added`` (optional, by
    reason) counts records a stage made, e.g. the tiles a split mosaic became."""
    img = counts["images_kept"] + sum(counts["images_rejected"].values())
    box = counts["boxes_kept"] + sum(counts["boxes_rejected"].values())
    img_in = counts["images_in"] + sum(counts.get("images_added", {}).values())
    box_in = counts["boxes_in"] + sum(counts.get("boxes_added", {}).values())
    assert img_in == img, f"image accounting broken: {counts}"
    assert box_in == box, f"box accounting broken: {counts}"


@dataclass
class Dataset:
    """A dataset directory loaded into memory (records are Arrow, zero-copy where possible)."""

    path: Path
    records: pa.Table
    rejects: pa.Table
    manifest: dict = field(default_factory=dict)

    @property
    def sources(self) -> dict:
        """Per-source metadata, most importantly each source's ``images_root``."""
        return self.manifest.get("sources", {})

    def image_path(self, source: str, file: str) -> Path | None:
        root = self.sources.get(source, {}).get("images_root")
        return Path(root) / file if root else None

    def input_paths(self) -> list[Path]:
        return dataset_input_paths(self.path, self.manifest)


def dataset_input_paths(path: str | Path, manifest: dict | None = None) -> list[Path]:
    """A dataset directory and its source folders: what a stage's output must never overlap.

    Called before the stage reads the directory, so an unreadable one yields only its own
    path here and is reported, as one line, by the read that follows.
    """
    path = Path(path)
    if manifest is None:
        try:
            manifest = read_manifest(path)
        except UserError:
            return [path]
    roots = [meta.get(k) for meta in manifest.get("sources", {}).values() for k in ROOT_KEYS]
    return [path, *(Path(r) for r in roots if isinstance(r, str) and r)]


def read_manifest(path: str | Path) -> dict:
    """The checked manifest, with every images root absolute (they are stored relative to
    the dataset directory, so a moved or cloned repository keeps finding its images)."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise UserError(f"{path} is not a groundset dataset directory (no {MANIFEST})")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise damaged(path, f"{MANIFEST} cannot be read ({str(e).splitlines()[0][:200]})") from None
    manifest = check_manifest(path, manifest)
    for meta in manifest.get("sources", {}).values():
        for key in ROOT_KEYS:
            root = meta.get(key)
            if isinstance(root, str) and root and not os.path.isabs(root):
                meta[key] = os.path.normpath(os.path.join(os.path.abspath(path), root))
    return manifest


def record_parts(path: str | Path, manifest: dict) -> list[Path]:
    """The records parts, exactly those the manifest lists (when it lists them)."""
    path = Path(path)
    found = sorted((path / RECORDS).glob("part-*.parquet"))
    listed = manifest.get("parts")
    if listed is None:
        return found
    names = [p["file"] for p in listed]
    for name in names:
        if "/" in name or not (path / RECORDS / name).is_file():
            raise damaged(path, f"{RECORDS}/{name} is missing")
    extra = [f.name for f in found if f.name not in names]
    if extra:
        raise damaged(path, f"{RECORDS}/{extra[0]} is not listed in {MANIFEST}")
    return [path / RECORDS / n for n in names]


OPTIONAL = frozenset(OPTIONAL_COLUMNS + OPTIONAL_BOX_FIELDS)


def _read_columns(part: Path, wanted: list[str] | None, box_fields, present: list) -> pa.Table:
    """The wanted columns the part has (an older part may lack an optional one).

    From a memory map: the file's pages are read in place instead of copied into fresh
    buffers. Arrow's own threads are not used: its threaded read took 0.38 s of CPU
    against 0.07 s on one thread for the same wall time on this 2-core machine, and no
    less wall time again this round. The box fields are instead
    read in two halves, one on a thread of its own (``_join_box_fields``). The first
    200,000-row part of the audit bench, each read in a fresh process with the audit's
    jemalloc pool, median of 7: 0.086 s, against 0.10 s mapped on one thread and 0.11 s
    read into buffers on one thread (that copy also raised the audit's peak by 25 MiB)."""
    names = [c for c in (wanted or RECORD_SCHEMA.names) if c in present]
    if box_fields is None or "boxes" not in names:
        return pq.read_table(part, columns=names, use_threads=False, memory_map=True)
    pf = pq.ParquetFile(part, memory_map=True)  # nested projection: only these leaves of each box
    leaves = [c.path for c in pf.schema if c.path.startswith("boxes.")]
    keep = [c for c in names if c != "boxes"]
    fields = [c for c in leaves if c.rsplit(".", 1)[-1] in box_fields]
    if len(fields) < 2:
        return pf.read(columns=keep + fields, use_threads=False)
    from concurrent.futures import ThreadPoolExecutor

    half = fields[: len(fields) // 2]
    with ThreadPoolExecutor(1) as aside:
        other = aside.submit(
            lambda: pq.ParquetFile(part, memory_map=True).read(columns=half, use_threads=False)
        )
        table = pf.read(columns=keep + fields[len(half) :], use_threads=False)
        first = other.result()
    at = table.schema.get_field_index("boxes")
    boxes = _join_box_fields(first.column("boxes"), table.column("boxes"))
    return table.set_column(at, table.schema.field(at).with_type(boxes.type), boxes)


def _join_box_fields(a: pa.ChunkedArray, b: pa.ChunkedArray) -> pa.Array:
    """One ``boxes`` column from two reads of the same lists with different box fields:
    the same offsets and nulls (both come from the file's same levels), ``a``'s fields
    then ``b``'s. No values are copied."""
    la, lb = kernels.one_array(a), kernels.one_array(b)
    sa, sb = la.values, lb.values
    struct = pa.StructArray.from_arrays(
        [s.field(i) for s in (sa, sb) for i in range(s.type.num_fields)],
        fields=[s.type.field(i) for s in (sa, sb) for i in range(s.type.num_fields)],
        mask=sa.is_null() if sa.null_count else None,
    )
    item = la.type.value_field.with_type(struct.type)
    return pa.ListArray.from_arrays(
        la.offsets, struct, type=pa.list_(item), mask=la.is_null() if la.null_count else None
    )


def _field(name: str, box_fields) -> pa.Field:
    field = RECORD_SCHEMA.field(name)
    if name != "boxes" or box_fields is None:
        return field
    return field.with_type(pa.list_(pa.struct([BOX_TYPE.field(f) for f in box_fields])))


def read_part(
    path: str | Path,
    part: Path,
    columns: list[str] | None = None,
    rows: int | None = None,
    box_fields: tuple[str, ...] | None = None,
) -> pa.Table:
    """One records part, checked: schema, types, and the row rules of ``validate``.

    ``box_fields`` (e.g. ``BOX_COORDS``) reads only those fields of each box: the audit
    needs the coordinates, not the phrases, and decoding the strings was most of its read.
    """
    path = Path(path)
    where = f"{RECORDS}/{part.name}"
    # the file names are always checked: no stage may reach outside an images root
    wanted = None if columns is None else list(dict.fromkeys([*columns, "file"]))
    try:
        found = pq.read_schema(part)
        check_schema(path, where, found, RECORD_SCHEMA, OPTIONAL)
        table = _read_columns(part, wanted, box_fields, found.names)
    except (OSError, pa.ArrowException) as e:
        raise damaged(path, f"{where} cannot be read ({str(e).splitlines()[0][:200]})") from None
    names = RECORD_SCHEMA.names if wanted is None else wanted
    schema = pa.schema([_field(c, box_fields) for c in names])
    table = conform(path, where, fill_optional(table, names, box_fields), schema)
    if rows is not None and table.num_rows != rows:
        raise damaged(path, f"{where} has {table.num_rows} rows, {MANIFEST} lists {rows}")
    check_rows(path, where, table)
    return table if columns is None else table.select(columns)


def row_locator(parts: list[Path], starts):
    """``where_of(row)`` for rows counted across ``parts``, part ``k`` starting at row
    ``starts[k]``: "records/part-00001.parquet row 9", how errors name a row."""

    def where_of(row: int) -> str:
        k = int(np.searchsorted(starts, row, side="right") - 1)
        return f"{RECORDS}/{parts[k].name} row {row - starts[k]}"

    return where_of


def read_records(
    path: str | Path,
    columns: list[str] | None = None,
    manifest: dict | None = None,
    box_fields: tuple[str, ...] | None = None,
) -> pa.Table:
    path = Path(path)
    manifest = read_manifest(path) if manifest is None else manifest
    parts = record_parts(path, manifest)
    rows = {p["file"]: p["rows"] for p in manifest.get("parts") or []}
    tables = [read_part(path, p, columns, rows.get(p.name), box_fields) for p in parts]
    names = RECORD_SCHEMA.names if columns is None else columns
    empty = pa.schema([_field(c, box_fields) for c in names]).empty_table()
    table = pa.concat_tables(tables) if tables else empty
    where_of = row_locator(parts, np.cumsum([0] + [t.num_rows for t in tables]))
    if "image_id" in table.column_names:
        check_unique_ids(path, table.column("image_id"), where_of)
    boxes = n_boxes(table) if "boxes" in table.column_names else None
    check_kept_counts(path, manifest, table.num_rows, boxes)
    return table


def check_kept_counts(path: str | Path, manifest: dict, images: int, boxes: int | None) -> None:
    """The records hold the images (and, when counted, the boxes) that ``manifest.json``
    counts as kept: the whole-dataset rule every reader checks after its last part."""
    counts = manifest.get("counts") or {}
    for what, got, key in (("images", images, "images_kept"), ("boxes", boxes, "boxes_kept")):
        if got is not None and key in counts and got != counts[key]:
            raise damaged(
                path,
                f"the records hold {got} {what}, {MANIFEST} counts {counts[key]} "
                "(a part is missing or was edited)",
            )


def read_rejects(path: str | Path, manifest: dict) -> pa.Table:
    path = Path(path)
    if not (path / REJECTS).is_file():
        rejects = empty_rejects()
    else:
        try:
            check_schema(path, REJECTS, pq.read_schema(path / REJECTS), REJECT_SCHEMA)
            rejects = conform(path, REJECTS, pq.read_table(path / REJECTS), REJECT_SCHEMA)
        except (OSError, pa.ArrowException) as e:
            raise damaged(
                path, f"{REJECTS} cannot be read ({str(e).splitlines()[0][:200]})"
            ) from None
    counts = manifest.get("counts")
    if counts is not None and count_rejects(rejects) != (
        counts["images_rejected"],
        counts["boxes_rejected"],
    ):
        raise damaged(path, f"{REJECTS} does not hold the rejects {MANIFEST} counts")
    return rejects


def read_dataset(
    path: str | Path, columns: list[str] | None = None, box_fields: tuple[str, ...] | None = None
) -> Dataset:
    p = Path(path)
    manifest = read_manifest(p)
    records = read_records(p, columns, manifest, box_fields)
    return Dataset(p, records, read_rejects(p, manifest), manifest)


def write_dataset(
    out: str | Path,
    records: pa.Table,
    rejects: pa.Table | None,
    *,
    stage: str,
    inputs: list,
    params: dict,
    images_in: int,
    boxes_in: int,
    sources: dict | None = None,
    extra: dict | None = None,
    extra_files: dict | None = None,
) -> dict:
    """Write a complete dataset directory atomically and return its manifest.

    ``extra_files`` maps a relative name to a ``pyarrow.Table`` (written as Parquet) or
    ``bytes``/``str`` (written verbatim), for stage-specific side outputs.
    """
    from pipeline.core.dataset_writer import dataset_writer, write_extra

    with dataset_writer(out, stage=stage, inputs=inputs, params=params, sources=sources) as writer:
        writer.add(records, rejects)
        for name, content in (extra_files or {}).items():
            write_extra(writer.tmp / name, content)
        manifest = writer.finish(images_in, boxes_in, extra)
    return {**manifest, "sources": sources or {}}  # as read_dataset gives it: absolute roots
