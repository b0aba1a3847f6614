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
            # label text of float32 values (cx, cy, w, h computed in float64 from them): 1e-6 of the image
            # is the text's 6 significant digits
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


@pytest.mark.parametrize("hardlinks", [True, False])
def test_yolo_images_behind_relative_symlinks_never_dangle(tmp_path, monkeypatch, hardlinks):
    """An images root of relative symlinks (``a.jpg -> ../pool/a.jpg``): Linux's link()
    links the symlink itself, so the export held the same relative link, dangling in
    its new folder. Every exported image must exist, and ultralytics must read them."""
    pool, root = tmp_path / "pool", tmp_path / "root"
    root.mkdir()
    images, boxes = [], []
    for i in range(4):
        write_jpeg(pool / f"{i}.jpg", 32, 32, seed=i)
        os.symlink(f"../pool/{i}.jpg", root / f"{i}.jpg")
        images.append({"id": i, "file": f"{i}.jpg", "width": 32, "height": 32})
        images[-1]["split"] = "val" if i == 0 else "train"
        boxes.append({"image": i, "xyxy": (0.1, 0.2, 0.6, 0.7), "category": "kite"})
    make_dataset(tmp_path / "d", "src", images, boxes, root)
    if not hardlinks:  # another filesystem: link() fails, the symlink fallback is used

        def no_link(*a, **k):
            raise OSError("cross-device link")

        monkeypatch.setattr(os, "link", no_link)
    data_yaml = export_yolo(tmp_path / "d", tmp_path / "deep" / "er" / "y")
    exported = sorted((tmp_path / "deep" / "er" / "y" / "images").rglob("*.jpg"))
    assert len(exported) == 4
    for p in exported:
        assert os.path.exists(p), f"dangling: {p} -> {os.readlink(p)}"
        assert p.read_bytes() == (pool / p.name).read_bytes()
        if p.is_symlink():
            assert os.path.isabs(os.readlink(p))

    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    d = check_det_dataset(str(data_yaml))
    for split, n in (("train", 3), ("val", 1)):
        ds = YOLODataset(img_path=d[split], data=d, task="detect", augment=False, imgsz=32)
        assert len(ds.labels) == n and all(len(lb["cls"]) == 1 for lb in ds.labels)
        assert ds[0]["img"].shape[0] == 3  # the pixels load through the exported path


def test_yolo_streams_by_part_with_name_collisions_across_parts(tmp_path, monkeypatch):
    """Parts of 3 rows: categories and colliding flattened names are found over the whole
    dataset (``a/b.jpg`` and ``a__b.jpg`` both flatten to ``a__b.jpg``, in different
    parts), so every copy gets its row suffix, as in one pass."""
    from pipeline.core import dataset as ds_mod
    from pipeline.stages.export.yolo import flat_names

    monkeypatch.setattr(ds_mod, "ROWS_PER_PART", 3)
    root = tmp_path / "imgs"
    files = ["a/b.jpg", "x.jpg", "y.jpg", "z.jpg", "a__b.jpg", "w.jpg", "v.jpg"]
    for i, f in enumerate(files):
        write_jpeg(root / f, 16, 16, seed=i)
    images = [{"id": i, "file": f, "width": 16, "height": 16} for i, f in enumerate(files)]
    boxes = [{"image": i, "xyxy": (0.1, 0.1, 0.5, 0.5), "category": f"c{i}"} for i in (1, 6)]
    src = make_dataset(tmp_path / "d", "s", images, boxes, root)
    assert len(json.loads((src / "manifest.json").read_text())["parts"]) == 3
    export_yolo(src, tmp_path / "y")
    got = sorted(p.name for p in (tmp_path / "y" / "images" / "train").iterdir())
    assert got == sorted(flat_names(["s"] * len(files), files))  # the one-pass names
    assert {"a__b-0.jpg", "a__b-4.jpg"} <= set(got)
    data = yaml.safe_load((tmp_path / "y" / "data.yaml").read_text())
    assert data["names"] == {0: "c1", 1: "c6"}  # categories from every part
    assert (tmp_path / "y" / "labels" / "train" / "v.txt").read_text().startswith("1 ")
