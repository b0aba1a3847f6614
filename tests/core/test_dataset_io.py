import json

import pyarrow as pa
import pytest

from pipeline.core.dataset import read_dataset, write_dataset
from pipeline.core.records import BOX, IMAGE, RECORD_SCHEMA, reject_rows


def _records(n_images: int, boxes_per_image: int) -> pa.Table:
    box = {
        "phrase": "dog",
        "category": "dog",
        "x0": 0.1,
        "y0": 0.1,
        "x1": 0.5,
        "y1": 0.5,
        "score": 1.0,
        "origin": "test",
    }
    rows = [
        {
            "image_id": f"t:{i}",
            "source": "t",
            "file": f"{i}.jpg",
            "width": 10,
            "height": 10,
            "captions": ["a dog"],
            "license": "",
            "split": "",
            "boxes": [box] * boxes_per_image,
        }
        for i in range(n_images)
    ]
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)


def test_write_then_read_round_trips_and_counts_add_up(tmp_path):
    rejects = reject_rows(
        stage="test",
        source="s",
        kind=[IMAGE, BOX, BOX],
        image_id=["s:9", "s:0", "s:0"],
        reason=["bad_file", "crowd", "crowd"],
    )
    m = write_dataset(
        tmp_path / "d",
        _records(3, 2),
        rejects,
        stage="test",
        inputs=[],
        params={},
        images_in=4,
        boxes_in=8,
    )
    assert m["counts"]["images_rejected"] == {"bad_file": 1}
    assert m["counts"]["boxes_rejected"] == {"crowd": 2}
    ds = read_dataset(tmp_path / "d")
    assert ds.records.num_rows == 3
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["counts"]["boxes_kept"] == 6


def test_broken_accounting_is_refused_and_leaves_no_output(tmp_path):
    with pytest.raises(AssertionError):
        write_dataset(
            tmp_path / "d",
            _records(3, 2),
            None,
            stage="test",
            inputs=[],
            params={},
            images_in=4,
            boxes_in=6,
        )
    assert not (tmp_path / "d").exists()


def test_outputs_get_umask_permissions_not_private_temp_ones(tmp_path):
    import os

    from pipeline.core.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        write_dataset(
            tmp_path / "d",
            _records(1, 1),
            None,
            stage="test",
            inputs=[],
            params={},
            images_in=1,
            boxes_in=1,
        )
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
