"""YOLO score: COCO AP of a detector's boxes on generated images against the *requested* layout.

This is the layout-following metric of the GLIGEN paper: if the model put each requested
object in its box, an off-the-shelf detector finds it there. Requested boxes play the
ground truth, detections play the predictions, and pycocotools' COCOeval does the
matching, so the numbers mean what every layout-to-image paper means by AP/AP50/AP75.

A requested box whose category the detector has no class for can never be matched; it
would silently depress recall if kept and silently vanish if dropped. It is therefore
set aside and *reported* as unscorable (count, per-category count, and a list).

Everything is columnar: boxes come in as flat arrays with an ``image_index`` column, and
COCO structures are built from those arrays, never with a loop per box in our code.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

BACKENDS = ("auto", "pycocotools", "faster-coco-eval")


@dataclass
class Boxes:
    """Flat box columns for a batch of images (pixels, xyxy).

    ``labels`` are category/class *names*; ``scores`` are ignored for ground truth.
    """

    image_index: np.ndarray
    xyxy: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self):
        self.image_index = np.asarray(self.image_index, dtype=np.int64).reshape(-1)
        self.xyxy = np.asarray(self.xyxy, dtype=np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=object).reshape(-1)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        n = len(self.image_index)
        if (
            len(self.xyxy) != n
            or len(self.labels) != n
            or (self.scores is not None and len(self.scores) != n)
        ):
            raise ValueError("box columns must have equal length")

    def __len__(self) -> int:
        return len(self.image_index)


@dataclass
class YoloScore:
    ap: float
    ap50: float
    ap75: float
    n_images: int
    n_requested: int
    n_scorable: int
    n_unscorable: int
    n_detections: int
    unscorable_by_category: dict = field(default_factory=dict)
    unscorable: list = field(default_factory=list)  # [{"image_index", "box_index", "category"}]
    backend: str = "pycocotools"

    def as_dict(self, with_list: bool = True) -> dict:
        d = dict(self.__dict__)
        if not with_list:
            d.pop("unscorable")
        return d


def normalise_name(names) -> np.ndarray:
    """Category names compare case- and space-insensitively ("Traffic  Light" == "traffic light").

    Only the distinct names are normalised, then broadcast back, so the cost is per
    category, not per box.
    """
    arr = np.asarray(names, dtype=object).reshape(-1)
    if arr.size == 0:
        return arr
    uniq, inverse = np.unique(arr.astype(str), return_inverse=True)
    norm = np.array([" ".join(u.lower().split()) for u in uniq.tolist()], dtype=object)
    return norm[inverse]


def _class_ids(names, lookup: dict) -> np.ndarray:
    """1-based detector class id per name (0 = the detector has no such class)."""
    arr = normalise_name(names)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    uniq, inverse = np.unique(arr.astype(str), return_inverse=True)
    ids = np.array([lookup.get(u, 0) for u in uniq.tolist()], dtype=np.int64)
    return ids[inverse]


def resolve_backend(backend: str) -> str:
    """``auto`` picks faster-coco-eval when installed (tests check it matches pycocotools)."""
    if backend == "auto":
        return available_backends()[-1]
    return backend


def _coco_apis(backend: str):
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, lambda gt, dt: COCOeval(gt, dt, iouType="bbox")
    if backend == "faster-coco-eval":
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError:
            raise ImportError(
                "faster-coco-eval is not installed (pip install faster-coco-eval)"
            ) from None
        return COCO, lambda gt, dt: COCOeval_faster(
            gt, dt, iouType="bbox", print_function=lambda *a: None
        )
    raise ValueError(f"unknown COCOeval backend {backend!r}; choose from {BACKENDS}")


def available_backends() -> list[str]:
    out = ["pycocotools"]
    try:
        import faster_coco_eval  # noqa: F401

        out.append("faster-coco-eval")
    except ImportError:
        pass
    return out


def _xywh(xyxy: np.ndarray) -> np.ndarray:
    return np.stack(
        [xyxy[:, 0], xyxy[:, 1], xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], axis=1
    )


def _gt_dataset(
    n_images: int, sizes: np.ndarray, gt: Boxes, cat_ids: np.ndarray, classes: list[str]
) -> dict:
    wh = _xywh(gt.xyxy)
    images = [
        {"id": int(i) + 1, "width": int(w), "height": int(h)}
        for i, (w, h) in enumerate(sizes.tolist())
    ]
    cols = zip(
        range(1, len(gt) + 1),
        (gt.image_index + 1).tolist(),
        cat_ids.tolist(),
        wh.tolist(),
        (wh[:, 2] * wh[:, 3]).tolist(),
    )
    anns = [
        {"id": a, "image_id": i, "category_id": c, "bbox": b, "area": ar, "iscrowd": 0}
        for a, i, c, b, ar in cols
    ]
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(classes)]
    return {"images": images, "annotations": anns, "categories": categories}


def yolo_score(
    requested: Boxes,
    detections: Boxes,
    sizes,
    detector_classes: list[str],
    *,
    backend: str = "pycocotools",
) -> YoloScore:
    """COCO AP of ``detections`` against ``requested`` boxes, both in pixels of the generated images.

    ``sizes`` is an (n_images, 2) array of (width, height); images without any requested
    or detected box still count (a detection there is a false positive).
    """
    backend = resolve_backend(backend)
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    n_images = len(sizes)
    classes = [str(c) for c in detector_classes]
    keys = normalise_name(classes)
    lookup = {k: i + 1 for i, k in reversed(list(enumerate(keys.tolist())))}

    req_ids = _class_ids(requested.labels, lookup)
    known = req_ids > 0
    unknown_pos = np.flatnonzero(~known)
    box_index = _index_within_image(requested.image_index)
    unscorable = [
        {"image_index": int(i), "box_index": int(b), "category": str(c)}
        for i, b, c in zip(
            requested.image_index[unknown_pos].tolist(),
            box_index[unknown_pos].tolist(),
            requested.labels[unknown_pos].tolist(),
        )
    ]
    by_cat = dict(sorted(Counter(requested.labels[unknown_pos].tolist()).items()))

    det_ids = _class_ids(detections.labels, lookup)
    if np.any(det_ids == 0):
        bad = sorted(set(detections.labels[det_ids == 0].tolist()))
        raise ValueError(f"detections carry labels that are not detector classes: {bad[:5]}")

    scorable = Boxes(requested.image_index[known], requested.xyxy[known], requested.labels[known])
    result = {
        "n_images": n_images,
        "n_requested": len(requested),
        "n_scorable": int(known.sum()),
        "n_unscorable": int((~known).sum()),
        "n_detections": len(detections),
        "unscorable_by_category": by_cat,
        "unscorable": unscorable,
        "backend": backend,
    }
    if len(scorable) == 0:
        # Nothing to find: AP is undefined, reported as NaN rather than a misleading 0 or 1.
        return YoloScore(ap=float("nan"), ap50=float("nan"), ap75=float("nan"), **result)
    if len(detections) == 0:
        return YoloScore(ap=0.0, ap50=0.0, ap75=0.0, **result)

    COCO, make_eval = _coco_apis(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = _gt_dataset(n_images, sizes, scorable, req_ids[known], classes)
        gt.createIndex()
        dets = np.concatenate(
            [
                (detections.image_index + 1)[:, None].astype(np.float64),
                _xywh(detections.xyxy),
                detections.scores[:, None]
                if detections.scores is not None
                else np.ones((len(detections), 1)),
                det_ids[:, None].astype(np.float64),
            ],
            axis=1,
        )
        dt = gt.loadRes(dets)
        ev = make_eval(gt, dt)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = np.asarray(ev.stats, dtype=np.float64)
    # COCOeval reports -1 where a quantity is undefined; keep that as NaN for JSON honesty.
    stats = np.where(stats < 0, np.nan, stats)
    return YoloScore(ap=float(stats[0]), ap50=float(stats[1]), ap75=float(stats[2]), **result)


def _index_within_image(image_index: np.ndarray) -> np.ndarray:
    """Position of each box among its image's boxes (input order), vectorised."""
    if image_index.size == 0:
        return image_index.copy()
    order = np.argsort(image_index, kind="stable")
    sorted_idx = image_index[order]
    starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(sorted_idx)]))
    out = np.empty_like(image_index)
    out[order] = np.arange(len(sorted_idx)) - run_start
    return out
