"""``flatten_boxes`` is the inverse of ``assemble``, on any slice, chunking or null list."""

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.records import RECORD_SCHEMA, assemble, flatten_boxes

IMAGE_COLS = ("image_id", "source", "file", "width", "height", "captions", "license", "split")


def _records(counts):
    n = len(counts)
    owner = np.repeat(np.arange(n), counts)
    rng = np.random.default_rng(len(owner))
    x0 = rng.random(len(owner)).astype(np.float32) * 0.5
    images = {
        "image_id": [f"s:{i}" for i in range(n)],
        "source": ["s"] * n,
        "file": [f"{i}.jpg" for i in range(n)],
        "width": [64] * n,
        "height": [48] * n,
    }
    boxes = {
        "image_index": owner,
        "phrase": [f"p{k}" for k in range(len(owner))],
        "category": ["c"] * len(owner),
        "x0": x0,
        "y0": x0,
        "x1": x0 + 0.25,
        "y1": x0 + 0.5,
        "score": np.ones(len(owner), np.float32),
        "origin": ["coco"] * len(owner),
    }
    return assemble(images, boxes)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), max_size=12), st.integers(0, 12), st.integers(0, 12))
def test_round_trip_on_slices(counts, a, b):
    table = _records(counts)
    start, stop = sorted((min(a, len(counts)), min(b, len(counts))))
    part = pa.concat_tables(
        [table.slice(start, 1), table.slice(start + 1, stop - start)]
    )  # chunked
    fb = flatten_boxes(part)
    lengths = [counts[i] for i in range(start, start + part.num_rows)]
    assert fb.offsets[0] == 0 and fb.offsets[-1] == len(fb.image) == sum(lengths)
    assert np.array_equal(np.diff(fb.offsets), lengths)
    assert all(0 <= i < c for i, c in zip(fb.index, np.asarray(counts)[start + fb.image]))
    again = assemble({k: part.column(k) for k in IMAGE_COLS}, fb.box_columns())
    assert again.equals(part.combine_chunks())


def test_null_lists_and_empty_tables():
    table = _records([2, 1])
    nulled = table.set_column(
        8,
        "boxes",
        pa.array([None, table.column("boxes")[1].as_py()], RECORD_SCHEMA.field("boxes").type),
    )
    fb = flatten_boxes(nulled)
    assert fb.image.tolist() == [1] and fb.offsets.tolist() == [0, 0, 1]
    empty = flatten_boxes(RECORD_SCHEMA.empty_table())
    assert empty.xyxy.shape == (0, 4) and empty.offsets.tolist() == [0]


def test_coordinates_keep_their_precision():
    table = _records([3])
    fb = flatten_boxes(table)
    x0 = table.column("boxes")[0].values.field("x0").to_numpy()
    assert fb.coords(dtype=None)[0].dtype == np.float32
    assert np.array_equal(fb.xyxy_as(np.float32)[:, 0], x0)
    assert np.array_equal(fb.xyxy[:, 0], x0.astype(np.float64))
