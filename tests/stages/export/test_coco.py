"""COCO JSON export: round-trips through ingest, and pycocotools reads it."""

import json

import numpy as np
import pytest

from pipeline.core.dataset import read_dataset
from pipeline.stages.export import export
from pipeline.stages.export.coco import export_coco
from pipeline.stages.ingest.coco import ingest_coco
from tests.dataset_factory import make_dataset


def synthetic_coco(tmp_path, n_images=30, seed=0):
    """A COCO instances + captions pair with awkward but valid values: category ids with
    gaps, float pixel boxes, mask areas unlike the box's, crowd regions, annotation ids
    with gaps, licence ids, several captions per image, some images empty."""
    rng = np.random.default_rng(seed)
    cats = [
        {"id": i, "name": n, "supercategory": "thing"}
        for i, n in [(1, "person"), (3, "car"), (18, "dog"), (90, "toothbrush")]
    ]
    images, anns, caps = [], [], []
    for i in range(n_images):
        w, h = int(rng.integers(40, 700)), int(rng.integers(40, 700))
        images.append(
            {
                "id": 1000 + 7 * i,
                "file_name": f"{i:012d}.jpg",
                "width": w,
                "height": h,
                "license": int(rng.integers(1, 4)),
            }
        )
        for _ in range(int(rng.integers(0, 6))):
            x, y = rng.uniform(0, w - 5), rng.uniform(0, h - 5)
            bw, bh = rng.uniform(1, w - x), rng.uniform(1, h - y)
            anns.append(
                {
                    "id": 3 * len(anns) + 11,
                    "image_id": 1000 + 7 * i,
                    "iscrowd": int(rng.random() < 0.15),
                    "category_id": int(rng.choice([c["id"] for c in cats])),
                    "bbox": [float(x), float(y), float(bw), float(bh)],
                    "area": float(bw * bh * rng.uniform(0.3, 0.9)),
                    "segmentation": [[x, y, x + bw, y, x + bw, y + bh]],
                }
            )
        for k in range(int(rng.integers(0, 3))):
            caps.append(
                {"id": len(caps) + 1, "image_id": 1000 + 7 * i, "caption": f"A dog {k} car"}
            )
    licenses = [
        {"id": k, "name": f"License {k}", "url": f"http://example.org/{k}"} for k in (1, 2, 3)
    ]
    inst = tmp_path / "instances_syn.json"
    inst.write_text(
        json.dumps(
            {"images": images, "annotations": anns, "categories": cats, "licenses": licenses}
        )
    )
    cap = tmp_path / "captions_syn.json"
    cap.write_text(json.dumps({"images": images, "annotations": caps}))
    return inst, cap


def test_coco_round_trip_synthetic(tmp_path):
    inst, cap = synthetic_coco(tmp_path)
    m1 = ingest_coco(inst, tmp_path / "d1", captions=cap, source="syn")
    path = export_coco(tmp_path / "d1", tmp_path / "coco")
    m2 = ingest_coco(path, tmp_path / "d2", captions=path.parent / "captions.json", source="syn")
    a, b = read_dataset(tmp_path / "d1").records, read_dataset(tmp_path / "d2").records
    assert a.num_rows == 30 and m1["counts"]["boxes_kept"] > 30
    assert a.equals(b)  # areas, annotation ids and crowd regions included
    crowd = m1["counts"]["boxes_rejected"]["crowd"]
    assert crowd > 0 and sum(map(len, a.column("crowd").to_pylist())) == crowd
    assert m2["counts"]["images_rejected"] == {} and m2["counts"]["boxes_rejected"] == {
        "crowd": crowd
    }
    for key in ("categories", "licenses"):
        assert m1["sources"]["syn"][key] == m2["sources"]["syn"][key]


def test_coco_round_trip_real_subset(tmp_path, shared_data):
    sub = shared_data / "coco_instances_val2017_subsets" / "cocotiny_instances_val2017_80img.json"
    cap = shared_data / "coco_captions_val2017" / "captions_val2017.json"
    ingest_coco(sub, tmp_path / "d1", captions=cap, source="tiny")
    path = export_coco(tmp_path / "d1", tmp_path / "coco")
    ingest_coco(path, tmp_path / "d2", captions=path.parent / "captions.json", source="tiny")
    assert read_dataset(tmp_path / "d1").records.equals(read_dataset(tmp_path / "d2").records)


def test_coco_export_is_valid_for_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    imgs = [
        {"id": 5, "file": "a.jpg", "width": 200, "height": 100, "captions": ["a cat"]},
        {"id": 9, "file": "b/c.jpg", "width": 64, "height": 64},
    ]
    boxes = [
        {"image": 0, "xyxy": (0.1, 0.2, 0.5, 0.9), "category": "cat"},
        {"image": 0, "xyxy": (0.0, 0.0, 1.0, 1.0), "category": "dog"},
        {"image": 1, "xyxy": (0.25, 0.25, 0.75, 0.5), "category": "cat"},
    ]
    make_dataset(tmp_path / "d", "s", imgs, boxes)
    path = export("coco", tmp_path / "d", tmp_path / "out")
    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [5, 9]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cat", "dog"]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[5]))
    assert len(anns) == 2 and all(a["iscrowd"] == 0 for a in anns)
    x, y, w, h = anns[0]["bbox"]
    # float32 corners times the size, written with the shortest round-trip text: float32 rounding
    assert np.allclose(
        [x, y, x + w, y + h], np.float32([0.1, 0.2, 0.5, 0.9]) * [200, 100, 200, 100]
    )
    # no source area: the box's w*h in float64, pytest.approx's rtol 1e-6
    assert anns[0]["area"] == pytest.approx(w * h)
    assert "segmentation" not in anns[0]  # boxes only, documented
    caps = json.loads((tmp_path / "out" / "captions.json").read_text())["annotations"]
    assert caps == [{"id": 1, "image_id": 5, "caption": "a cat"}]


def test_coco_ids_fall_back_to_sequential_when_not_unique(tmp_path):
    a = make_dataset(tmp_path / "a", "s", [{"id": 1, "file": "x.jpg"}], [])
    from pipeline.stages.curate import curate

    b = make_dataset(tmp_path / "b", "t", [{"id": 1, "file": "y.jpg"}], [])
    curate([a, b], tmp_path / "m", hash_images=False)
    path = export_coco(tmp_path / "m", tmp_path / "out")
    images = json.loads(path.read_text())["images"]
    assert [i["id"] for i in images] == [1, 2]
    assert [i["groundset_image_id"] for i in images] == ["s:1", "t:1"]


@pytest.mark.parametrize("scheduler", [None, "threads"])
def test_coco_export_streams_by_part_with_the_same_bytes(tmp_path, monkeypatch, scheduler):
    """The same records in 4-image parts give the same instances.json and captions.json,
    byte for byte, in process and as dask tasks: image ids, annotation ids (with gaps and
    crowd regions), categories and caption ids are decided over the whole dataset."""
    from pipeline.core import dataset as ds_mod

    inst, cap = synthetic_coco(tmp_path)
    ingest_coco(inst, tmp_path / "d1", captions=cap, source="syn")
    one = export_coco(tmp_path / "d1", tmp_path / "one")
    monkeypatch.setattr(ds_mod, "ROWS_PER_PART", 4)
    ingest_coco(inst, tmp_path / "d4", captions=cap, source="syn")
    assert len(json.loads((tmp_path / "d4" / "manifest.json").read_text())["parts"]) == 8
    parts = export_coco(tmp_path / "d4", tmp_path / "parts", scheduler=scheduler)
    here, there = (str(tmp_path / d).encode() for d in ("d4", "d1"))  # info.description
    for name in ("instances.json", "captions.json"):
        got = (parts.parent / name).read_bytes().replace(here, there)
        assert got == (one.parent / name).read_bytes()
