"""Curate streams by records part: the output equals the in-memory ``curate_records`` of
the concatenated inputs (records, parts and rejects), with duplicates across parts and
inputs, on small parts, in process and as dask tasks."""

import pyarrow as pa
import pytest

from pipeline.core import dataset as ds_mod
from pipeline.core.dataset import read_dataset, write_dataset
from pipeline.core.records import REJECT_SCHEMA
from pipeline.stages.curate import curate, curate_records
from tests.dataset_factory import random_dataset

KEY = ["kind", "image_id", "box_index", "reason", "detail"]


def _inputs(tmp_path):
    a = random_dataset(tmp_path / "a", "s", 50, 1, max_boxes_per_image=12)
    b = random_dataset(tmp_path / "b", "s", 30, 2, max_boxes_per_image=12)  # same files
    # c repeats some ids of a under other files: duplicate_image_id, not duplicate_image
    rec = read_dataset(a).records.slice(10, 15)
    rec = rec.set_column(
        rec.schema.get_field_index("file"),
        "file",
        pa.array([f"other{k}.jpg" for k in range(rec.num_rows)]),
    )
    c = tmp_path / "c"
    write_dataset(
        c,
        rec,
        None,
        stage="t",
        inputs=[],
        params={},
        images_in=15,
        boxes_in=ds_mod.n_boxes(rec),
        sources={"s": {"images_root": None}},
    )
    return [a, b, c]


def _sorted_rejects(t: pa.Table) -> list:
    return sorted(t.select(KEY).to_pylist(), key=lambda r: tuple(map(str, r.values())))


@pytest.mark.parametrize("scheduler", [None, "synchronous"])
def test_streamed_curate_equals_in_memory(tmp_path, monkeypatch, scheduler):
    inputs = _inputs(tmp_path)
    records = pa.concat_tables([read_dataset(p).records for p in inputs])
    sources = read_dataset(inputs[0]).sources
    want, want_rejects = curate_records(records, sources, hash_images=False)
    monkeypatch.setattr(ds_mod, "ROWS_PER_PART", 7)  # many parts in, many parts out
    small = [tmp_path / f"{p.name}7" for p in inputs]
    for p, q in zip(inputs, small):  # the inputs again, in 7-row parts
        d = read_dataset(p)
        write_dataset(
            q,
            d.records,
            None,
            stage="t",
            inputs=[],
            params={},
            images_in=d.records.num_rows,
            boxes_in=ds_mod.n_boxes(d.records),
            sources=d.sources,
        )
    m = curate(small, tmp_path / "out", hash_images=False, scheduler=scheduler)
    got = read_dataset(tmp_path / "out")
    assert got.records.equals(want.cast(got.records.schema))
    assert _sorted_rejects(got.rejects) == _sorted_rejects(want_rejects.cast(REJECT_SCHEMA))
    assert {p["rows"] for p in m["parts"][:-1]} == {7}
    reasons = m["counts"]["images_rejected"]
    assert reasons["duplicate_image"] == 30 and reasons["duplicate_image_id"] == 15
