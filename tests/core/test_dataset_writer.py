"""``dataset_writer``: a dataset written part by part is the dataset ``write_dataset``
writes from one table: same records, parts, rejects and counts."""

import json

import numpy as np
import pyarrow as pa
import pytest

from pipeline.core import dataset as ds_mod
from pipeline.core.dataset import read_dataset, write_dataset
from pipeline.core.dataset_writer import dataset_writer
from pipeline.core.errors import UserError
from pipeline.core.records import BOX, IMAGE, assemble, reject_rows


def make_records(n: int) -> pa.Table:
    """n images with k % 3 boxes each."""
    owner = np.repeat(np.arange(n), np.arange(n) % 3)
    m = owner.size
    images = {
        "image_id": [f"s:{k}" for k in range(n)],
        "source": ["s"] * n,
        "file": [f"{k}.jpg" for k in range(n)],
        "width": np.full(n, 64),
        "height": np.full(n, 48),
    }
    xy = np.linspace(0.1, 0.5, m, dtype=np.float32)
    boxes = {"image_index": owner, "phrase": ["a"] * m, "category": ["a"] * m}
    boxes.update(x0=xy, y0=xy, x1=xy + 0.2, y1=xy + 0.3, score=np.ones(m, np.float32))
    boxes["origin"] = ["t"] * m
    return assemble(images, boxes)


def _rejects(n: int, kind: str, reason: str) -> pa.Table:
    return reject_rows(
        stage="t",
        source=["s"] * n,
        kind=kind,
        image_id=[f"r{k}" for k in range(n)],
        file=[f"r{k}.jpg" for k in range(n)],
        box_index=[-1 if kind == IMAGE else 0] * n,
        reason=reason,
        detail="",
    )


def test_streamed_equals_one_table(tmp_path, monkeypatch):
    monkeypatch.setattr(ds_mod, "ROWS_PER_PART", 4)
    records = make_records(10)
    rejects = pa.concat_tables([_rejects(2, IMAGE, "a"), _rejects(3, BOX, "b")])
    kw = {"stage": "t", "inputs": [], "params": {"p": 1}, "sources": {"s": {"images_root": None}}}
    n_in, boxes_in = 12, ds_mod.n_boxes(records) + 3
    whole = write_dataset(
        tmp_path / "whole", records, rejects, images_in=n_in, boxes_in=boxes_in, **kw
    )
    with dataset_writer(tmp_path / "parts", **kw) as w:
        w.add(records.slice(0, 3), rejects.slice(0, 2))
        w.add(records.slice(3, 0))
        w.add(records.slice(3), rejects.slice(2))
        parts = w.finish(n_in, boxes_in)
    assert parts["counts"] == whole["counts"]
    a, b = read_dataset(tmp_path / "whole"), read_dataset(tmp_path / "parts")
    assert a.records.equals(b.records) and a.rejects.equals(b.rejects)
    # rows are buffered into whole parts: the same parts however the records arrive
    assert parts["parts"] == whole["parts"] and [p["rows"] for p in parts["parts"]] == [4, 4, 2]
    on_disk = json.loads((tmp_path / "parts" / "manifest.json").read_text())
    assert list(on_disk) == list(json.loads((tmp_path / "whole" / "manifest.json").read_text()))


def test_broken_accounting_or_an_exception_leaves_no_output(tmp_path):
    out = tmp_path / "d"
    with (
        pytest.raises(AssertionError, match="accounting"),
        dataset_writer(out, stage="t", inputs=[], params={}) as w,
    ):
        w.add(make_records(3))
        w.finish(images_in=5, boxes_in=0)  # two images unaccounted for
    assert not out.exists()
    with (
        pytest.raises(UserError, match="kept none"),
        dataset_writer(out, stage="t", inputs=[], params={}) as w,
    ):
        w.add(make_records(0), _rejects(2, IMAGE, "bad"))
        w.finish(images_in=2, boxes_in=0)
    assert not out.exists()
