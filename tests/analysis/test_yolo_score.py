"""YOLO score on constructed layouts whose right answer is known by construction."""

import numpy as np
import pytest

from analysis.yolo_score import Boxes, available_backends, yolo_score

CLASSES = ["person", "car", "dog", "traffic light"]


def _layout(seed=0, n_images=6, per_image=5, size=256):
    rng = np.random.default_rng(seed)
    n = n_images * per_image
    idx = np.repeat(np.arange(n_images), per_image)
    xy = rng.uniform(0, size * 0.6, (n, 2))
    wh = rng.uniform(size * 0.15, size * 0.35, (n, 2))
    xyxy = np.concatenate([xy, xy + wh], axis=1)
    labels = rng.choice(CLASSES, n)
    sizes = np.tile([size, size], (n_images, 1))
    return idx, xyxy, labels, sizes


def test_perfect_detections_score_one():
    idx, xyxy, labels, sizes = _layout()
    req = Boxes(idx, xyxy, labels)
    det = Boxes(idx, xyxy, labels, np.linspace(0.5, 0.99, len(idx)))
    s = yolo_score(req, det, sizes, CLASSES)
    assert (
        # COCOeval's APs are means of 101-point precision samples in float64: perfect (or no)
        # detections give exactly 1 (or 0) up to rounding; pytest.approx's rtol 1e-6 (also below)
        s.ap == pytest.approx(1.0) and s.ap50 == pytest.approx(1.0) and s.ap75 == pytest.approx(1.0)
    )
    assert s.n_unscorable == 0 and s.n_scorable == len(idx)


def test_no_detections_score_zero_and_wrong_class_scores_zero():
    idx, xyxy, labels, sizes = _layout(1)
    req = Boxes(idx, xyxy, labels)
    empty = Boxes(np.zeros(0), np.zeros((0, 4)), np.zeros(0, dtype=object), np.zeros(0))
    assert yolo_score(req, empty, sizes, CLASSES).ap50 == 0.0
    # Every detection in the right place but of another class: nothing matches.
    wrong = np.array([CLASSES[(CLASSES.index(c) + 1) % len(CLASSES)] for c in labels])
    s = yolo_score(req, Boxes(idx, xyxy, wrong, np.ones(len(idx))), sizes, CLASSES)
    assert s.ap50 == pytest.approx(0.0)


def test_shifted_boxes_lower_ap75_than_ap50():
    idx, xyxy, labels, sizes = _layout(2)
    w = xyxy[:, 2] - xyxy[:, 0]
    shifted = xyxy + np.stack([w * 0.2, np.zeros_like(w), w * 0.2, np.zeros_like(w)], 1)
    # IoU of a box with itself shifted by 20% of its width is 0.8/1.2 = 0.67: above 0.5, below 0.75.
    s = yolo_score(
        Boxes(idx, xyxy, labels), Boxes(idx, shifted, labels, np.ones(len(idx))), sizes, CLASSES
    )
    assert s.ap50 == pytest.approx(1.0)
    assert s.ap75 == pytest.approx(0.0)
    assert s.ap75 < s.ap50


def test_half_found_gives_partial_ap():
    idx, xyxy, labels, sizes = _layout(3)
    keep = np.arange(len(idx)) % 2 == 0
    det = Boxes(idx[keep], xyxy[keep], labels[keep], np.ones(keep.sum()))
    s = yolo_score(Boxes(idx, xyxy, labels), det, sizes, CLASSES)
    assert 0.2 < s.ap50 < 0.8


def test_unknown_categories_are_reported_not_dropped():
    idx, xyxy, labels, sizes = _layout(4)
    labels = labels.astype(object)
    labels[[0, 3, 7]] = ["unicorn", "unicorn", "toaster oven"]
    labels[1] = "Traffic  Light"  # case and spacing differ from the class name: still scorable
    req = Boxes(idx, xyxy, labels)
    known = np.ones(len(idx), bool)
    known[[0, 3, 7]] = False
    det_labels = np.where(known, labels, "person").astype(object)
    det_labels[1] = "traffic light"
    det = Boxes(idx[known], xyxy[known], det_labels[known], np.ones(known.sum()))
    s = yolo_score(req, det, sizes, CLASSES)
    assert s.n_unscorable == 3 and s.n_scorable == len(idx) - 3
    assert s.unscorable_by_category == {"toaster oven": 1, "unicorn": 2}
    assert sorted((u["image_index"], u["box_index"]) for u in s.unscorable) == [
        (0, 0),
        (0, 3),
        (1, 2),
    ]
    assert s.ap50 == pytest.approx(1.0)  # the scorable ones were all found


def test_all_unscorable_gives_nan_not_a_number_that_looks_real():
    idx, xyxy, _, sizes = _layout(5)
    s = yolo_score(
        Boxes(idx, xyxy, np.full(len(idx), "unicorn")),
        Boxes(idx, xyxy, np.full(len(idx), "dog"), np.ones(len(idx))),
        sizes,
        CLASSES,
    )
    assert np.isnan(s.ap50) and s.n_unscorable == len(idx)


def test_faster_coco_eval_gives_identical_numbers():
    if "faster-coco-eval" not in available_backends():
        pytest.skip("faster-coco-eval is not installed")
    rng = np.random.default_rng(7)
    idx, xyxy, labels, sizes = _layout(6, n_images=20, per_image=6)
    # Noisy detections plus false positives: a case with a non-trivial precision/recall curve.
    jitter = rng.normal(0, 12, xyxy.shape)
    dxyxy = np.sort((xyxy + jitter).reshape(-1, 2, 2), axis=1).reshape(-1, 4)
    fp_idx = rng.integers(0, 20, 40)
    fp = _layout(9, n_images=8, per_image=5)[1]
    det = Boxes(
        np.r_[idx, fp_idx],
        np.r_[dxyxy, fp],
        np.r_[labels, rng.choice(CLASSES, 40)],
        rng.uniform(0.001, 1.0, len(idx) + 40),
    )
    req = Boxes(idx, xyxy, labels)
    a = yolo_score(req, det, sizes, CLASSES, backend="pycocotools")
    b = yolo_score(req, det, sizes, CLASSES, backend="faster-coco-eval")
    assert 0.05 < a.ap < 0.95
    # two COCOeval implementations of the same float64 interpolation: rounding only
    assert (a.ap, a.ap50, a.ap75) == pytest.approx((b.ap, b.ap50, b.ap75), abs=1e-12)
