"""Ingest of the real COCO and coco128 files in ../shared/data, checked against pycocotools.

pycocotools is the reference reader of COCO files, so per-image box counts, categories
and coordinates must agree with it. The coco128 YOLO labels were made from the same
COCO annotations, so ``ingest yolo`` must reproduce the COCO boxes of those images.
"""

from collections import Counter
from pathlib import PurePosixPath

import pytest

from pipeline.core.dataset import read_dataset
from pipeline.stages.ingest.coco import ingest_coco
from pipeline.stages.ingest.yolo import ingest_yolo

pycocotools = pytest.importorskip("pycocotools.coco")

SUBSETS = [
    "coco_instances_val2017_subsets/cocotiny_instances_val2017_80img.json",
    "coco_instances_val2017_subsets/cocomini_instances_val2017_79img.json",
    "coco128/coco_json_train2017_first128/instances_train2017_first128.json",
]


def load_coco(path):
    return pycocotools.COCO(str(path))


@pytest.mark.parametrize("rel", SUBSETS)
def test_coco_subset_matches_pycocotools(rel, shared_data, tmp_path):
    path = shared_data / rel
    m = ingest_coco(path, tmp_path / "d", source="real")
    ref = load_coco(path)
    records = read_dataset(tmp_path / "d").records.to_pylist()
    names = {c["id"]: c["name"] for c in ref.loadCats(ref.getCatIds())}
    assert len(records) == len(ref.imgs)
    for r in records:
        iid = int(r["image_id"].removeprefix("real:"))
        im = ref.imgs[iid]
        anns = ref.loadAnns(ref.getAnnIds(imgIds=[iid], iscrowd=False))
        assert (r["file"], r["width"], r["height"]) == (im["file_name"], im["width"], im["height"])
        assert r["license"] == str(im["license"])
        assert len(r["boxes"]) == len(anns), iid
        assert Counter(b["category"] for b in r["boxes"]) == Counter(
            names[a["category_id"]] for a in anns
        )
        # boxes keep file order within an image, so they line up with pycocotools' list
        for b, a in zip(r["boxes"], anns):
            x, y, w, h = a["bbox"]
            assert b["phrase"] == b["category"] == names[a["category_id"]]
            # float32 storage of x/width (ulp <= 6e-8 in [0, 1]); 1e-6 is far from a 1-pixel error (1.5e-3)
            assert (b["x0"], b["y0"]) == pytest.approx(
                (x / im["width"], y / im["height"]), abs=1e-6
            )
            assert (b["x1"], b["y1"]) == pytest.approx(
                (min(x + w, im["width"]) / im["width"], min(y + h, im["height"]) / im["height"]),
                abs=1e-6,
            )
    crowd = len(ref.getAnnIds(iscrowd=True))
    assert m["counts"]["boxes_rejected"] == {"crowd": crowd}
    assert m["counts"]["boxes_in"] == len(ref.anns)
    assert [c["id"] for c in m["sources"]["real"]["categories"]] == sorted(names)


def test_captions_join_matches_pycocotools(shared_data, tmp_path):
    inst = shared_data / SUBSETS[0]
    caps = shared_data / "coco_captions_val2017/captions_val2017.json"
    m = ingest_coco(inst, tmp_path / "d", captions=caps)
    ref = load_coco(caps)
    records = read_dataset(tmp_path / "d").records.to_pylist()
    assert m["sources"].keys() == {"cocotiny_instances_val2017_80img"}
    for r in records:
        iid = int(r["image_id"].split(":")[1])
        want = [a["caption"].strip() for a in ref.imgToAnns[iid]]
        assert r["captions"] == want and len(want) >= 5
    assert m["captions"]["captions_joined"] == sum(len(r["captions"]) for r in records)
    assert m["captions"]["captions_in"] == 25014


def test_images_root_is_recorded_and_resolves_files(shared_data, tmp_path):
    root = shared_data / "coco128/images/train2017"
    ingest_coco(shared_data / SUBSETS[2], tmp_path / "d", images_root=root)
    ds = read_dataset(tmp_path / "d")
    assert ds.sources["coco-train2017_first128"]["images_root"] == str(root.resolve())
    files = ds.records.column("file").to_pylist()
    assert all(ds.image_path("coco-train2017_first128", f).is_file() for f in files)


def test_yolo_coco128_reproduces_the_coco_boxes(shared_data, tmp_path):
    d = shared_data / "coco128"
    m = ingest_yolo(
        d / "images/train2017",
        d / "object_detection/labels/train2017",
        d / "object_detection/config.yaml",
        tmp_path / "y",
    )
    c = m["counts"]
    # label files 656 and 659 pair with no image: not label files, not read (12 lines)
    assert c["images_in"] == 128 == c["images_kept"] and c["images_rejected"] == {}
    assert c["boxes_in"] == 929 == c["boxes_kept"] and c["boxes_rejected"] == {}
    (split,) = m["sources"]["train2017"]["splits"]
    assert split["other_txt"] == 2 and split["label_files_read"] == 126
    assert split["other_txt_examples"] == ["000000000656.txt", "000000000659.txt"]

    ref = load_coco(d / "coco_json_train2017_first128/instances_train2017_first128.json")
    names = {k: v["name"] for k, v in ref.cats.items()}
    records = read_dataset(tmp_path / "y").records.to_pylist()
    by_id = {int(PurePosixPath(r["file"]).stem): r for r in records}
    assert len(by_id[250]["boxes"]) == 0 and len(by_id[508]["boxes"]) == 0  # no label file
    for iid, im in ref.imgs.items():
        r = by_id[iid]
        assert (r["width"], r["height"]) == (im["width"], im["height"])
        anns = ref.loadAnns(ref.getAnnIds(imgIds=[iid], iscrowd=False))
        # order-free comparison: sort on coordinates rounded well above the 1e-6 label noise
        want = sorted(
            (
                (names[a["category_id"]], a["bbox"][0] / im["width"], a["bbox"][1] / im["height"])
                for a in anns
            ),
            key=lambda t: (t[0], round(t[1], 3), round(t[2], 3)),
        )
        got = sorted(
            ((b["category"], b["x0"], b["y0"]) for b in r["boxes"]),
            key=lambda t: (t[0], round(t[1], 3), round(t[2], 3)),
        )
        assert [w[0] for w in want] == [g[0] for g in got], iid
        for (_, wx, wy), (_, gx, gy) in zip(want, got):
            # YOLO label text has 6 decimals (rounding <= 5e-7) against COCO's own float boxes: 1e-5
            assert gx == pytest.approx(wx, abs=1e-5) and gy == pytest.approx(wy, abs=1e-5)
