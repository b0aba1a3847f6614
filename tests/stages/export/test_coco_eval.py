"""COCO export as COCOeval sees it (#15 item 5), with the two real readers.

COCOeval puts each ground-truth annotation in a size bucket by its ``area`` (the mask's,
not the box's), ignores crowd regions (``iscrowd: 1``) rather than counting them as
missed objects, and keys annotations by id. An export that recomputed ``area`` from the
box, dropped the crowd regions or renumbered the ids scored the same detections
differently: on cocotiny, 163 of 929 annotations changed bucket. Here the same detections
are scored against the original file and against ingest -> export of it, and every
COCOeval statistic (AP and AR overall and per size bucket) must be identical.
"""

import contextlib
import io
import json

import numpy as np
import pytest

from pipeline.stages.export.coco import export_coco
from pipeline.stages.ingest.coco import ingest_coco

SUBSETS = [
    "coco_instances_val2017_subsets/cocotiny_instances_val2017_80img.json",
    "coco_instances_val2017_subsets/cocomini_instances_val2017_79img.json",
    "coco128/coco_json_train2017_first128/instances_train2017_first128.json",
]


def detections(gt: dict, seed: int = 0) -> list[dict]:
    """Imperfect detections of a ground truth: jittered boxes with random scores, some
    objects missed, some boxes on the crowd regions and some false positives, so every
    bucket's AP lies strictly between 0 and 1 and the ignore rules matter."""
    rng = np.random.default_rng(seed)
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    cats = [c["id"] for c in gt["categories"]]
    dets = []
    for a in gt["annotations"]:
        if rng.random() < 0.2:
            continue  # missed
        x, y, w, h = a["bbox"]
        jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
        dets.append(
            {
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "bbox": [
                    x + jitter[0],
                    y + jitter[1],
                    max(w + jitter[2], 1),
                    max(h + jitter[3], 1),
                ],
                "score": float(rng.random()),
            }
        )
    for image_id, (W, H) in sizes.items():  # false positives
        for _ in range(2):
            w, h = rng.uniform(5, W / 3), rng.uniform(5, H / 3)
            x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
            dets.append(
                {
                    "image_id": image_id,
                    "category_id": int(rng.choice(cats)),
                    "bbox": [x, y, w, h],
                    "score": float(rng.random()) * 0.5,
                }
            )
    return dets


def pycocotools_stats(gt_path, dets) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def faster_stats(gt_path, dets) -> np.ndarray:
    fce = pytest.importorskip("faster_coco_eval")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = fce.COCO(str(gt_path))
        ev = fce.COCOeval_faster(gt, gt.loadRes(dets), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)[:12]


@pytest.fixture(params=SUBSETS, ids=lambda r: r.rsplit("/", 1)[-1].split("_")[0])
def exported(request, shared_data, tmp_path):
    pytest.importorskip("pycocotools")
    original = shared_data / request.param
    ingest_coco(original, tmp_path / "d", source="real")
    return original, export_coco(tmp_path / "d", tmp_path / "coco")


def test_export_keeps_area_crowd_and_ids(exported):
    original, path = exported
    want = {a["id"]: a for a in json.loads(original.read_text())["annotations"]}
    got = {a["id"]: a for a in json.loads(path.read_text())["annotations"]}
    assert got.keys() == want.keys()  # same ids, crowd regions included
    for i, a in want.items():
        b = got[i]
        assert (b["image_id"], b["category_id"], b["iscrowd"]) == (
            a["image_id"],
            a["category_id"],
            a["iscrowd"],
        )
        assert b["area"] == a["area"]  # the very number: decides the size bucket
    assert sum(a["iscrowd"] for a in got.values()) > 0


@pytest.mark.parametrize("stats", [pycocotools_stats, faster_stats], ids=["pycocotools", "fce"])
def test_cocoeval_scores_export_like_the_original(exported, stats):
    original, path = exported
    dets = detections(json.loads(original.read_text()))
    want, got = stats(original, dets), stats(path, dets)
    assert 0 < want[3] < 1 and 0 < want[4] < 1 and 0 < want[5] < 1  # APs, APm, APl
    # Exact equality: ids, areas, crowd flags and categories are the source's; the boxes
    # differ from the source's by the float32 rounding of the normalised corners (< 1e-4
    # px), which moves an IoU by ~1e-7, far from any of COCOeval's thresholds here.
    np.testing.assert_array_equal(got, want)


def test_the_check_would_see_box_areas_and_dropped_crowds(exported, tmp_path):
    """The comparison above is sensitive: the old export (box areas, no crowd regions)
    scores the same detections differently on these files."""
    original, path = exported
    doc = json.loads(path.read_text())
    doc["annotations"] = [
        {**a, "area": a["bbox"][2] * a["bbox"][3]} for a in doc["annotations"] if not a["iscrowd"]
    ]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    dets = detections(json.loads(original.read_text()))
    assert not np.array_equal(pycocotools_stats(old, dets), pycocotools_stats(original, dets))


def test_info_says_where_each_source_images_live(shared_data, tmp_path):
    from pipeline.stages.curate import curate

    tiny = shared_data / SUBSETS[0]
    train = shared_data / SUBSETS[2]
    ingest_coco(tiny, tmp_path / "a", source="tiny")
    ingest_coco(
        train, tmp_path / "b", source="t128", images_root=shared_data / "coco128/images/train2017"
    )
    curate([tmp_path / "a", tmp_path / "b"], tmp_path / "m", hash_images=False)
    out = tmp_path / "coco"
    doc = json.loads(export_coco(tmp_path / "m", out).read_text())
    sources = doc["info"]["groundset_sources"]
    assert sources["tiny"] == {"images_root": None}
    root = out / sources["t128"]["images_root"]  # relative to the export folder
    assert root.resolve() == (shared_data / "coco128/images/train2017").resolve()
    for im in doc["images"]:
        if im["groundset_source"] == "t128":
            assert (root / im["file_name"]).is_file()


def test_crowd_regions_are_not_objects_for_the_other_stages(shared_data, tmp_path):
    """Crowd regions ride in their own column: curate keeps them with their image, and
    neither the YOLO labels nor the boxes the audit and trainer read contain them."""
    from pipeline.core.dataset import read_dataset
    from pipeline.stages.curate import curate
    from pipeline.stages.export.yolo import export_yolo

    root = shared_data / "coco128/images/train2017"
    m = ingest_coco(shared_data / SUBSETS[2], tmp_path / "d", source="t", images_root=root)
    crowd = m["counts"]["boxes_rejected"]["crowd"]
    curate([tmp_path / "d"], tmp_path / "c", hash_images=False, min_box_area=0, max_boxes=10**6)
    rec = read_dataset(tmp_path / "c").records
    assert sum(map(len, rec.column("crowd").to_pylist())) == crowd > 0
    export_yolo(tmp_path / "c", tmp_path / "y")
    lines = [line for f in (tmp_path / "y").rglob("*.txt") for line in f.read_text().splitlines()]
    assert len(lines) == m["counts"]["boxes_kept"]
