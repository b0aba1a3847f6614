"""Score one dataset directory of images against its own layout boxes.

The same function scores generated samples (a ``groundset sample`` output: images plus
the layouts they were asked to follow) and real images (a dataset's photos against their
annotated boxes, the "real images" reference row). Keeping one path for both is what
makes the real row a fair yardstick for the generated ones.

Per run it reports the YOLO score (``analysis.yolo_score``), the audit's ``grid_score``
over the *detected* boxes (does the generated layout look grid-regular?) and the
image-space tiling score (``analysis.image_grid``: do the pixels look tiled?). Images are
streamed in batches so memory is bounded by the batch, not the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analysis.image_grid import tiling_scores
from analysis.layout_stats import grid_scores_from_arrays
from analysis.yolo_score import Boxes, yolo_score
from pipeline.core import defaults
from pipeline.core.dataset import Dataset
from pipeline.core.errors import UserError
from pipeline.core.images import read_rgb
from pipeline.core.progress import progress
from pipeline.core.records import flatten_boxes


@dataclass
class RunScore:
    """Aggregates (JSON-ready) and one row per image (for CSV and the HTML report)."""

    summary: dict
    per_image: pd.DataFrame
    unscorable: list = field(default_factory=list)


def detector_classes(detector) -> list[str]:
    """The detector's full vocabulary: needed to tell unscorable categories from misses."""
    for attr in ("class_names", "names"):
        names = getattr(detector, attr, None)
        if callable(names):
            names = names()
        if isinstance(names, dict):
            return [str(names[k]) for k in sorted(names)]
        if names:
            return [str(n) for n in names]
    raise UserError(f"detector {getattr(detector, 'name', detector)!r} does not list its classes")


def requested_boxes(records: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, normalised xyxy, label) of every requested box; label = category, else phrase."""
    fb = flatten_boxes(records)
    if len(fb.image) == 0:
        return fb.offsets, np.zeros((0, 4)), np.zeros(0, dtype=object)
    cat = fb.category.fill_null("")
    phrase = fb.phrase.fill_null("")
    label = pc.if_else(pc.equal(pc.utf8_trim_whitespace(cat), ""), phrase, cat)
    return fb.offsets, fb.xyxy, np.asarray(label.to_pylist(), dtype=object)


def image_paths(ds: Dataset) -> list:
    src = ds.records.column("source").to_pylist()
    files = ds.records.column("file").to_pylist()
    paths = [ds.image_path(s, f) for s, f in zip(src, files)]
    missing = [f for f, p in zip(files, paths) if p is None or not p.is_file()]
    if missing:
        raise UserError(
            f"{ds.path}: {len(missing)} image(s) not found (first: {missing[0]}); "
            "the manifest's sources[].images_root must point at the images"
        )
    return paths


def score_dataset(
    ds: Dataset,
    detector,
    *,
    batch_size: int = 16,
    layout_conf: float = defaults.CONF,
    backend: str = "auto",
    desc: str = "evaluate",
) -> RunScore:
    """Detect on every image of ``ds`` and score detections against the records' boxes.

    ``layout_conf`` is the confidence above which detections count as objects for the
    layout grid score; the YOLO score uses every detection the detector returned (run it
    at a low ``conf``, as ``yolo val`` does, or AP is truncated).
    """
    records = ds.records
    paths = image_paths(ds)
    classes = detector_classes(detector)
    offsets, req_norm, req_label = requested_boxes(records)
    n = records.num_rows
    sizes = np.zeros((n, 2), np.int64)
    det_idx, det_xyxy, det_score, det_label = [], [], [], []
    tiling = {"seam": [], "periodic": [], "tiling": []}
    bar = progress(total=n, desc=desc, unit="img")
    for start in range(0, n, batch_size):
        idx = range(start, min(start + batch_size, n))
        images = [read_rgb(paths[i]) for i in idx]
        sizes[start : start + len(images)] = [(im.shape[1], im.shape[0]) for im in images]
        for i, d in zip(idx, detector.detect(images)):
            det_idx.append(np.full(len(d), i))
            det_xyxy.append(np.asarray(d.xyxy, np.float64).reshape(-1, 4))
            det_score.append(np.asarray(d.scores, np.float64))
            det_label.append(np.asarray(d.class_names, dtype=object))
        for k, v in tiling_scores(images).items():
            tiling[k].append(v)
        bar.update(len(images))
    bar.close()

    owner = np.repeat(np.arange(n), np.diff(offsets))
    wh = sizes[owner].astype(np.float64)
    req_px = req_norm * np.concatenate([wh, wh], axis=1)
    det = Boxes(
        _cat(det_idx, np.zeros(0, np.int64)),
        _cat(det_xyxy, np.zeros((0, 4))),
        _cat(det_label, np.zeros(0, object)),
        _cat(det_score, np.zeros(0)),
    )
    ys = yolo_score(Boxes(owner, req_px, req_label), det, sizes, classes, backend=backend)

    layout = _grid_of_detections(det, sizes, layout_conf, n)
    requested_grid = _grid_scores(offsets, req_norm)
    tiles = {k: _cat(v, np.zeros(0)) for k, v in tiling.items()}
    per_image = pd.DataFrame(
        {
            "image_id": records.column("image_id").to_pylist(),
            "file": records.column("file").to_pylist(),
            "n_requested": np.diff(offsets),
            "n_objects": layout["n_boxes"],
            "grid_score": layout["grid_score"],
            "low_evidence": layout["low_evidence"],
            "requested_grid_score": requested_grid["grid_score"],
            "tiling": tiles["tiling"],
            "seam": tiles["seam"],
            "periodic": tiles["periodic"],
        }
    )
    summary = {
        "ap": ys.ap,
        "ap50": ys.ap50,
        "ap75": ys.ap75,
        "n_images": n,
        "n_requested": ys.n_requested,
        "n_scorable": ys.n_scorable,
        "n_unscorable": ys.n_unscorable,
        "unscorable_by_category": ys.unscorable_by_category,
        "n_detections": ys.n_detections,
        "coco_backend": ys.backend,
        **grid_effect(per_image),
    }
    return RunScore(summary, per_image, ys.unscorable)


def _cat(parts: list, empty: np.ndarray) -> np.ndarray:
    return np.concatenate(parts) if parts else empty


def _grid_of_detections(det: Boxes, sizes: np.ndarray, conf: float, n: int) -> dict:
    """The audit's grid score over confident detections, normalised to each image."""
    keep = det.scores >= conf
    idx, xyxy = det.image_index[keep], det.xyxy[keep]
    order = np.argsort(idx, kind="stable")
    idx, xyxy = idx[order], xyxy[order]
    wh = sizes[idx].astype(np.float64)
    norm = np.clip(xyxy / np.concatenate([wh, wh], axis=1), 0, 1) if len(idx) else xyxy
    offsets = np.concatenate([[0], np.cumsum(np.bincount(idx, minlength=n))])
    return _grid_scores(offsets, norm)


def _grid_scores(offsets: np.ndarray, xyxy: np.ndarray) -> dict:
    """The audit's scores; with no box at all every image is simply without evidence
    (``grid_scores_from_arrays`` does not accept an all-empty input)."""
    n = len(offsets) - 1
    if len(xyxy) == 0:
        return {
            "n_boxes": np.zeros(n, np.int64),
            "grid_score": np.zeros(n),
            "low_evidence": np.ones(n, bool),
        }
    return grid_scores_from_arrays(offsets, *np.asarray(xyxy, np.float64).reshape(-1, 4).T)


def grid_effect(per_image: pd.DataFrame) -> dict:
    """Run-level grid effect: mean scores, and the share of clearly grid-like images.

    The layout score is averaged over images with enough detected objects to judge
    (the audit's own evidence rule); how many that was is reported beside it.
    """
    judged = per_image.loc[~per_image["low_evidence"].astype(bool), "grid_score"]
    return {
        "grid_score": float(judged.mean()) if len(judged) else float("nan"),
        "grid_share": float((judged > 0.5).mean()) if len(judged) else float("nan"),
        "grid_judged_images": len(judged),
        "requested_grid_score": float(per_image["requested_grid_score"].mean())
        if len(per_image)
        else float("nan"),
        "tiling_score": float(per_image["tiling"].mean()) if len(per_image) else float("nan"),
        "tiling_share": float((per_image["tiling"] > 0.5).mean())
        if len(per_image)
        else float("nan"),
    }
