"""ultralytics YOLO export: the layout ultralytics reads, ids kept from the manifest."""

import json
import os

import numpy as np
import pytest
import yaml

from pipeline.core.dataset import read_dataset
from pipeline.core.errors import UserError
from pipeline.stages.export.yolo import export_yolo
from tests.dataset_factory import make_dataset, write_jpeg


@pytest.fixture
def yolo_source(tmp_path):
    root = tmp_path / "imgs"
    images = []
    for i in range(12):
        write_jpeg(root / "sub" / f"{i}.jpg", 48, 32, seed=i)
        images.append(
            {
                "id": i,
                "file": f"sub/{i}.jpg",
                "width": 48,
                "height": 32,
                "split": "val" if i % 4 == 0 else "train",
            }
        )
    boxes = [
        {
            "image": i,
            "xyxy": (0.1 * (i % 5), 0.2, 0.1 * (i % 5) + 0.3, 0.7),
            "category": ["zebra", "apple", "kite"][(i + k) % 3],
        }
        for i in range(12)
        for k in range(i % 3)
    ]
    return make_dataset(tmp_path / "d", "src", images, boxes, root)


def test_yolo_layout_labels_and_ultralytics_reads_it(tmp_path, yolo_source):
    data_yaml = export_yolo(yolo_source, tmp_path / "y")
    data = yaml.safe_load(data_yaml.read_text())
    assert data["path"] == str((tmp_path / "y").resolve())
    assert data["names"] == {0: "apple", 1: "kite", 2: "zebra"}  # no category list: sorted
    rec = read_dataset(yolo_source).records.to_pylist()
    for r in rec:
        split = "val" if r["split"] == "val" else "train"
        stem = r["file"].replace("/", "__")[:-4]
        img = tmp_path / "y" / "images" / split / f"{stem}.jpg"
        assert img.read_bytes() == (tmp_path / "imgs" / r["file"]).read_bytes()
        rows = [
            line.split()
            for line in (tmp_path / "y" / "labels" / split / f"{stem}.txt").read_text().splitlines()
        ]
        assert len(rows) == len(r["boxes"])
        for row, b in zip(rows, r["boxes"]):
            assert data["names"][int(row[0])] == b["category"]
            want = [
                (b["x0"] + b["x1"]) / 2,
                (b["y0"] + b["y1"]) / 2,
                b["x1"] - b["x0"],
                b["y1"] - b["y0"],
            ]
            assert np.allclose([float(v) for v in row[1:]], want, atol=1e-6)

    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    d = check_det_dataset(str(data_yaml))
    val = YOLODataset(img_path=d["val"], data=d, task="detect", augment=False, imgsz=64)
    assert len(val.labels) == 3
    assert sum(len(lb["cls"]) for lb in val.labels) == sum(
        len(r["boxes"]) for r in rec if r["split"] == "val"
    )


def test_yolo_keeps_category_ids_from_manifest_and_skips_missing_images(tmp_path, yolo_source):
    (tmp_path / "imgs" / "sub" / "3.jpg").unlink()
    manifest = json.loads((yolo_source / "manifest.json").read_text())
    manifest["sources"]["src"]["categories"] = [
        {"id": 7, "name": "kite"},
        {"id": 2, "name": "zebra"},
        {"id": 5, "name": "horse"},
    ]
    (yolo_source / "manifest.json").write_text(json.dumps(manifest))
    data_yaml = export_yolo(yolo_source, tmp_path / "y")
    names = yaml.safe_load(data_yaml.read_text())["names"]
    assert names == {0: "zebra", 1: "horse", 2: "kite", 3: "apple"}  # by id, then the rest
    n = sum(len(os.listdir(tmp_path / "y" / "images" / s)) for s in ("train", "val"))
    assert n == 11


def test_yolo_without_images_is_a_user_error(tmp_path):
    make_dataset(tmp_path / "d", "s", [{"id": 1, "file": "x.jpg"}], [], tmp_path / "images")
    with pytest.raises(UserError, match="none of the 1 images"):
        export_yolo(tmp_path / "d", tmp_path / "y")
    assert not (tmp_path / "y").exists()
