"""The export command over all formats: bad input, CLI errors, and a real coco128 chain."""

import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.core.dataset import read_dataset
from pipeline.core.errors import UserError
from pipeline.stages.export import export
from pipeline.stages.export.yolo import export_yolo
from pipeline.stages.ingest.coco import ingest_coco
from tests.dataset_factory import make_dataset


def test_bad_inputs_are_user_errors(tmp_path):
    make_dataset(tmp_path / "d", "s", [{"id": 1, "file": "a.jpg"}], [])
    with pytest.raises(UserError, match="unknown export format"):
        export("parquet", tmp_path / "d", tmp_path / "o")
    with pytest.raises(UserError, match="not a groundset dataset"):
        export("coco", tmp_path / "nothing", tmp_path / "o")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a groundset output"):
        export("coco", tmp_path / "d", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_cli_export_one_line_errors(tmp_path):
    make_dataset(tmp_path / "d", "s", [{"id": 1, "file": "a.jpg"}], [])
    cmd = [sys.executable, "-m", "pipeline.cli", "export"]
    bad = subprocess.run(
        cmd
        + [
            "yolo",
            str(tmp_path / "d"),
            "--out",
            str(tmp_path / "y"),
            "--text-encoder",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    ok = subprocess.run(
        cmd + ["coco", str(tmp_path / "d"), "--out", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "c" / "instances.json").read_text())["images"][0]["id"] == 1


def test_real_coco128_chain_yolo_and_coco_sources(tmp_path, shared_data):
    """ingest yolo + ingest coco of the same 128 photos -> curate finds every photo twice
    by content -> export yolo -> ingest yolo reads back the same boxes."""
    from pipeline.stages.curate import DUPLICATE_IMAGE, curate
    from pipeline.stages.ingest.yolo import ingest_yolo

    c128 = shared_data / "coco128"
    imgs = c128 / "images" / "train2017"
    ingest_yolo(
        imgs,
        c128 / "object_detection" / "labels" / "train2017",
        c128 / "object_detection" / "config.yaml",
        tmp_path / "y",
        source="c128",
    )
    ingest_coco(
        c128 / "coco_json_train2017_first128" / "instances_train2017_first128.json",
        tmp_path / "c",
        images_root=imgs,
        source="c128json",
    )
    m = curate([tmp_path / "y", tmp_path / "c"], tmp_path / "cur", val_fraction=0.25)
    assert m["counts"]["images_rejected"] == {DUPLICATE_IMAGE: 128}
    assert m["counts"]["images_kept"] == 128
    cur = read_dataset(tmp_path / "cur").records
    assert set(cur.column("source").to_pylist()) == {"c128"}

    data_yaml = export_yolo(tmp_path / "cur", tmp_path / "export")
    ingest_yolo(
        tmp_path / "export" / "images" / "train",
        tmp_path / "export" / "labels" / "train",
        data_yaml,
        tmp_path / "back",
        source="c128",
    )
    back = {r["image_id"]: r for r in read_dataset(tmp_path / "back").records.to_pylist()}
    train = [r for r in cur.to_pylist() if r["split"] == "train"]
    assert len(back) == len(train) > 64
    for r in train:
        got = back[r["image_id"]]["boxes"]
        assert [b["category"] for b in got] == [b["category"] for b in r["boxes"]]
        for g, b in zip(got, r["boxes"]):
            assert np.allclose(
                [g[k] for k in ["x0", "y0", "x1", "y1"]],
                [b[k] for k in ["x0", "y0", "x1", "y1"]],
                # float32 coordinates after a text round trip through YOLO labels: 2e-6
                # covers float32 rounding (6e-8) plus the labels' printed digits
                atol=2e-6,
            )
