"""The grounding-record schema: one Arrow row per image, boxes nested.

This module is the leaf every package agrees on. It imports nothing of ours, so the
detector, audit and trainer code can all read and write records without import cycles.
See ``docs/schema.md`` for the field-by-field contract.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa

from pipeline.core import arrow_kernels as kernels

BOX_FIELDS = [
    pa.field("phrase", pa.string()),
    pa.field("category", pa.string()),
    pa.field("x0", pa.float32()),
    pa.field("y0", pa.float32()),
    pa.field("x1", pa.float32()),
    pa.field("y1", pa.float32()),
    pa.field("score", pa.float32()),
    pa.field("origin", pa.string()),
    # What a source said about the box, kept so an export can give it back: COCO's
    # ``area`` (the mask's, in pixels; it decides COCOeval's size bucket and differs
    # from the box's) and annotation ``id``. Null when the source has none (YOLO,
    # pseudo-labels) and in datasets written before these fields existed.
    pa.field("area", pa.float64()),
    pa.field("ann_id", pa.int64()),
]
BOX_TYPE = pa.struct(BOX_FIELDS)
BOX_LIST = pa.list_(BOX_TYPE)
# Fields and columns a dataset directory may lack (written before they existed); they
# read back as nulls.
OPTIONAL_BOX_FIELDS = ("area", "ann_id")
OPTIONAL_COLUMNS = ("crowd",)

RECORD_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("captions", pa.list_(pa.string())),
        pa.field("license", pa.string()),
        pa.field("split", pa.string()),
        pa.field("boxes", BOX_LIST),
        # COCO's crowd annotations (``iscrowd: 1``): ignore regions, not objects. They
        # live apart from ``boxes`` so no stage can train on, audit or export them as
        # objects by mistake; only ``export coco`` writes them back (with ``iscrowd: 1``).
        # Null when the source has no such notion.
        pa.field("crowd", BOX_LIST),
    ]
)

# One row per rejected image or box. ``kind`` is "image" or "box"; a box row carries
# the index of the box within its source annotation list (or -1 when unknown).
REJECT_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string()),
        pa.field("source", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("image_id", pa.string()),
        pa.field("file", pa.string()),
        pa.field("box_index", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
    ]
)

IMAGE = "image"
BOX = "box"

# Reason given to the boxes of an image that was itself rejected, so that box
# accounting stays exact without double-counting the image's own reason.
PARENT_IMAGE_REJECTED = "parent_image_rejected"


def empty_records() -> pa.Table:
    return RECORD_SCHEMA.empty_table()


def empty_rejects() -> pa.Table:
    return REJECT_SCHEMA.empty_table()


def reject_rows(
    *, stage: str, source, kind, image_id, reason, file=None, box_index=None, detail=None
) -> pa.Table:
    """Rows of ``rejects.parquet``, one per entry of ``image_id``.

    Every other column may be one string (the same for every row), None (null), or a
    sequence, NumPy array or Arrow array of the same length: stages build their reject
    rows column-wise, without a loop per box.
    """
    n = len(image_id)
    given = {
        "stage": stage,
        "source": source,
        "kind": kind,
        "image_id": image_id,
        "file": file,
        "box_index": box_index,
        "reason": reason,
        "detail": detail,
    }
    cols = {}
    for f in REJECT_SCHEMA:
        v = given[f.name]
        if v is None:
            cols[f.name] = pa.nulls(n, f.type)
        elif isinstance(v, str):
            cols[f.name] = pa.array([v] * n, f.type)
        else:
            cols[f.name] = _arrow(v, f.type)
    return pa.table(cols, schema=REJECT_SCHEMA)


def _arrow(values, typ: pa.DataType) -> pa.Array:
    """Arrow array of ``typ`` from a sequence, NumPy array or Arrow array (no copy if typed)."""
    if isinstance(values, pa.ChunkedArray):
        values = kernels.one_array(values)
    if isinstance(values, pa.Array):
        return values if values.type == typ else values.cast(typ)
    return pa.array(values, typ)


def assemble(images: dict, boxes: dict, crowd: dict | None = None) -> pa.Table:
    """Build a records table from flat columns without a Python loop per box.

    ``images`` maps record columns (``image_id``, ``source``, ``file``, ``width``,
    ``height``, ``captions``, ``license``, ``split``) to equal-length sequences.
    ``boxes`` maps the box fields plus ``image_index`` (position of the owning image in
    ``images``) to equal-length arrays; boxes keep their given order within an image.
    The optional box fields (``area``, ``ann_id``) may be left out (nulls). ``crowd``,
    when given, holds the ignore regions in the same form as ``boxes``; without it the
    ``crowd`` column is null. Any column may be a Python sequence, a NumPy array or an
    Arrow array.
    """
    n = len(images["image_id"])
    cols = {
        "image_id": _arrow(images["image_id"], pa.string()),
        "source": _arrow(images["source"], pa.string()),
        "file": _arrow(images["file"], pa.string()),
        "width": pa.array(np.asarray(images["width"], dtype=np.int32)),
        "height": pa.array(np.asarray(images["height"], dtype=np.int32)),
        "captions": _arrow(images.get("captions", [[]] * n), pa.list_(pa.string())),
        "license": _arrow(images.get("license", [""] * n), pa.string()),
        "split": _arrow(images.get("split", [""] * n), pa.string()),
        "boxes": box_lists(n, boxes),
        "crowd": pa.nulls(n, BOX_LIST) if crowd is None else box_lists(n, crowd),
    }
    return pa.table(cols, schema=RECORD_SCHEMA)


def box_lists(n_images: int, boxes: dict) -> pa.ListArray:
    """``n_images`` lists of boxes from flat box columns plus ``image_index``."""
    owner = np.asarray(boxes.get("image_index", []), dtype=np.int64)
    if owner.size and (owner.min() < 0 or owner.max() >= n_images):
        raise ValueError("box image_index out of range of the images columns")
    presorted = owner.size < 2 or bool((owner[1:] >= owner[:-1]).all())
    order = None if presorted else pa.array(np.argsort(owner, kind="stable"))
    counts = np.bincount(owner, minlength=n_images)[:n_images] if owner.size else np.zeros(n_images)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    missing = [
        f.name for f in BOX_FIELDS if f.name not in boxes and f.name not in OPTIONAL_BOX_FIELDS
    ]
    if owner.size and missing:
        raise ValueError(f"box columns missing: {missing}")

    def child(f: pa.Field) -> pa.Array:
        if not owner.size:
            return pa.array([], f.type)
        if f.name not in boxes:
            return pa.nulls(owner.size, f.type)
        values = _arrow(boxes[f.name], f.type)
        return values if order is None else values.take(order)

    struct = pa.StructArray.from_arrays([child(f) for f in BOX_FIELDS], fields=BOX_FIELDS)
    return pa.ListArray.from_arrays(pa.array(offsets), struct)


def fill_optional(
    table: pa.Table, columns: list[str] | None = None, box_fields: tuple | None = None
) -> pa.Table:
    """A records table (or a projection of one to ``columns`` and ``box_fields``) with
    the optional columns and box fields it lacks added as nulls: a dataset written before
    they existed reads like a current one."""
    wanted = RECORD_SCHEMA.names if columns is None else columns
    for name in OPTIONAL_COLUMNS:
        if name in wanted and name not in table.column_names:
            table = table.append_column(
                RECORD_SCHEMA.field(name), pa.nulls(table.num_rows, BOX_LIST)
            )
    for name in ("boxes", *OPTIONAL_COLUMNS):
        if name not in table.column_names:
            continue
        column = table.column(name)
        typ = column.type
        if not (pa.types.is_list(typ) or pa.types.is_large_list(typ)):
            continue  # a wrong type: the schema check names it
        struct = typ.value_type
        if not pa.types.is_struct(struct):
            continue
        have = {struct.field(i).name for i in range(struct.num_fields)}
        absent = [
            f
            for f in BOX_FIELDS
            if f.name in OPTIONAL_BOX_FIELDS
            and f.name not in have
            and (box_fields is None or name != "boxes" or f.name in box_fields)
        ]
        if absent:
            chunks = column.chunks or [pa.array([], typ)]
            column = pa.chunked_array([_add_fields(c, absent) for c in chunks])
            table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def _add_fields(lists: pa.Array, absent: list) -> pa.Array:
    """``lists`` (list<struct>) with null children appended for the ``absent`` fields."""
    offsets = np.asarray(lists.offsets, dtype=np.int64)
    values = lists.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    children = values.flatten() + [pa.nulls(len(values), f.type) for f in absent]
    fields = [values.type.field(i) for i in range(values.type.num_fields)] + absent
    mask = values.is_null() if values.null_count else None
    struct = pa.StructArray.from_arrays(children, fields=fields, mask=mask)
    large = pa.types.is_large_list(lists.type)
    cls, typ = (pa.LargeListArray, pa.int64()) if large else (pa.ListArray, pa.int32())
    mask = lists.is_null() if lists.null_count else None
    return cls.from_arrays(pa.array(offsets - offsets[0], typ), struct, mask=mask)


@dataclass(frozen=True)
class FlatBoxes:
    """Every box of a records table as flat columns: the inverse of ``assemble``.

    Stages work on boxes column-wise (filters, exports, statistics); this is the one
    place that turns the nested ``boxes`` lists into flat arrays, so null lists, empty
    tables and sliced or chunked columns are handled the same way everywhere.
    """

    offsets: np.ndarray  # (rows + 1,) int64: row i's boxes are [offsets[i], offsets[i+1])
    fields: pa.StructArray  # the boxes themselves, in row order

    # Built on first use: the audit's statistics need only the offsets, and these two
    # passes over every box were a tenth of the time before its first part is scored.
    @cached_property
    def image(self) -> np.ndarray:
        """(n,) int64: the row that owns each box."""
        lengths = np.diff(self.offsets)
        return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)

    @cached_property
    def index(self) -> np.ndarray:
        """(n,) int64: the box's position within its image's list."""
        return np.arange(len(self.image), dtype=np.int64) - self.offsets[:-1][self.image]

    def column(self, name: str) -> pa.Array:
        return self.fields.field(name)

    @property
    def phrase(self) -> pa.Array:
        return self.column("phrase")

    @property
    def category(self) -> pa.Array:
        return self.column("category")

    def coords(self, dtype=np.float64) -> tuple[np.ndarray, ...]:
        """(x0, y0, x1, y1) as separate contiguous arrays; ``dtype=None`` keeps the stored
        type (float32 in records)."""
        return tuple(np.asarray(self.column(k), dtype=dtype) for k in ("x0", "y0", "x1", "y1"))

    def xyxy_as(self, dtype) -> np.ndarray:
        """(n, 4) normalised corners in ``dtype``."""
        return np.stack(self.coords(dtype), axis=1) if len(self.image) else np.zeros((0, 4), dtype)

    @cached_property
    def xyxy(self) -> np.ndarray:
        return self.xyxy_as(np.float64)

    def pixel_xywh(self, width: np.ndarray, height: np.ndarray) -> np.ndarray:
        """(n, 4) float64 COCO boxes; float32 x int is exact in float64, so ingest
        divides back to the very same float32 coordinates."""
        w = np.asarray(width, np.float64)[self.image]
        h = np.asarray(height, np.float64)[self.image]
        x0, y0 = self.xyxy[:, 0] * w, self.xyxy[:, 1] * h
        x1, y1 = self.xyxy[:, 2] * w, self.xyxy[:, 3] * h
        return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)

    def box_columns(self) -> dict:
        """The ``boxes`` argument of ``assemble`` that rebuilds the same lists."""
        have = [f.name for f in BOX_FIELDS if self.fields.type.get_field_index(f.name) >= 0]
        return {"image_index": self.image, **{name: self.column(name) for name in have}}


def flatten_boxes(records: pa.Table | pa.Array | pa.ChunkedArray) -> FlatBoxes:
    """Flatten a records table's ``boxes`` column, or such a column itself (null lists
    count as empty)."""
    lists = kernels.one_array(records.column("boxes") if isinstance(records, pa.Table) else records)
    lists = kernels.fill_null(lists, []) if lists.null_count else lists
    offsets = np.asarray(lists.offsets, dtype=np.int64)
    offsets = offsets - offsets[0]
    fields = kernels.one_array(kernels.list_flatten(lists))
    return FlatBoxes(offsets=offsets, fields=fields)
