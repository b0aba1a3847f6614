"""The grounding-record schema: one Arrow row per image, boxes nested.

This module is the leaf every package agrees on. It imports nothing of ours, so the
detector, audit and trainer code can all read and write records without import cycles.
See ``docs/schema.md`` for the field-by-field contract.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BOX_FIELDS = [
    pa.field("phrase", pa.string()),
    pa.field("category", pa.string()),
    pa.field("x0", pa.float32()),
    pa.field("y0", pa.float32()),
    pa.field("x1", pa.float32()),
    pa.field("y1", pa.float32()),
    pa.field("score", pa.float32()),
    pa.field("origin", pa.string()),
]
BOX_TYPE = pa.struct(BOX_FIELDS)
BOX_LIST = pa.list_(BOX_TYPE)

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
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values if values.type == typ else values.cast(typ)
    return pa.array(values, typ)


def assemble(images: dict, boxes: dict) -> pa.Table:
    """Build a records table from flat columns without a Python loop per box.

    ``images`` maps record columns (``image_id``, ``source``, ``file``, ``width``,
    ``height``, ``captions``, ``license``, ``split``) to equal-length sequences.
    ``boxes`` maps the box fields plus ``image_index`` (position of the owning image in
    ``images``) to equal-length arrays; boxes keep their given order within an image.
    Any column may be a Python sequence, a NumPy array or an Arrow array.
    """
    n_images = len(images["image_id"])
    owner = np.asarray(boxes.get("image_index", []), dtype=np.int64)
    if owner.size and (owner.min() < 0 or owner.max() >= n_images):
        raise ValueError("box image_index out of range of the images columns")
    presorted = owner.size < 2 or bool((owner[1:] >= owner[:-1]).all())
    order = None if presorted else pa.array(np.argsort(owner, kind="stable"))
    counts = np.bincount(owner, minlength=n_images)[:n_images] if owner.size else np.zeros(n_images)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    missing = [f.name for f in BOX_FIELDS if f.name not in boxes]
    if owner.size and missing:
        raise ValueError(f"box columns missing: {missing}")
    children = [
        pa.array([], f.type)
        if not owner.size
        else _arrow(boxes[f.name], f.type)
        if order is None
        else _arrow(boxes[f.name], f.type).take(order)
        for f in BOX_FIELDS
    ]
    struct = pa.StructArray.from_arrays(children, fields=BOX_FIELDS)
    box_lists = pa.ListArray.from_arrays(pa.array(offsets), struct)
    n = n_images
    cols = {
        "image_id": _arrow(images["image_id"], pa.string()),
        "source": _arrow(images["source"], pa.string()),
        "file": _arrow(images["file"], pa.string()),
        "width": pa.array(np.asarray(images["width"], dtype=np.int32)),
        "height": pa.array(np.asarray(images["height"], dtype=np.int32)),
        "captions": _arrow(images.get("captions", [[]] * n), pa.list_(pa.string())),
        "license": _arrow(images.get("license", [""] * n), pa.string()),
        "split": _arrow(images.get("split", [""] * n), pa.string()),
        "boxes": box_lists,
    }
    return pa.table(cols, schema=RECORD_SCHEMA)


@dataclass(frozen=True)
class FlatBoxes:
    """Every box of a records table as flat columns: the inverse of ``assemble``.

    Stages work on boxes column-wise (filters, exports, statistics); this is the one
    place that turns the nested ``boxes`` lists into flat arrays, so null lists, empty
    tables and sliced or chunked columns are handled the same way everywhere.
    """

    image: np.ndarray  # (n,) int64: the row that owns each box
    index: np.ndarray  # (n,) int64: the box's position within its image's list
    offsets: np.ndarray  # (rows + 1,) int64: row i's boxes are [offsets[i], offsets[i+1])
    fields: pa.StructArray  # the boxes themselves, in row order

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
        return {"image_index": self.image, **{f.name: self.column(f.name) for f in BOX_FIELDS}}


def flatten_boxes(records: pa.Table | pa.Array | pa.ChunkedArray) -> FlatBoxes:
    """Flatten a records table's ``boxes`` column, or such a column itself (null lists
    count as empty)."""
    lists = records.column("boxes") if isinstance(records, pa.Table) else records
    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    if isinstance(lists, pa.ChunkedArray):  # an empty table keeps zero chunks
        lists = pa.array([], lists.type)
    lists = lists.fill_null([]) if lists.null_count else lists
    offsets = np.asarray(lists.offsets, dtype=np.int64)
    offsets = offsets - offsets[0]
    lengths = np.diff(offsets)
    image = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    index = np.arange(len(image), dtype=np.int64) - offsets[:-1][image]
    fields = pc.list_flatten(lists)
    if isinstance(fields, pa.ChunkedArray):
        fields = fields.combine_chunks()
    return FlatBoxes(image=image, index=index, offsets=offsets, fields=fields)
