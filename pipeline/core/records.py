"""The grounding-record schema: one Arrow row per image, boxes nested.

This module is the leaf every package agrees on. It imports nothing of ours, so the
detector, audit and trainer code can all read and write records without import cycles.
See ``docs/schema.md`` for the field-by-field contract.
"""

import numpy as np
import pyarrow as pa

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
        pa.field("boxes", pa.list_(BOX_TYPE)),
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


def rejects_table(rows: dict) -> pa.Table:
    """Build a rejects table from column lists; missing columns are filled with nulls."""
    n = len(next(iter(rows.values()))) if rows else 0
    cols = {f.name: rows.get(f.name, [None] * n) for f in REJECT_SCHEMA}
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
        pa.array([], f.type) if not owner.size
        else _arrow(boxes[f.name], f.type) if order is None
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
