"""``groundset audit --pixels``: the image-space tiling check on the training images.

Each records part is scored where ``map_parts`` runs it (here, a local dask scheduler
or a cluster, as ``label`` runs): every image whose file lies inside its source's
images root is decoded small and given the ``pixels`` family score
(``analysis.pixel_audit``). The gate then sees, per image, the larger of its box score
and its pixel score, and an image with too few boxes to judge is judged by its pixels:
a 2x2 collage of four single-object photos becomes grid-like, with family ``pixels``.
Images without a readable file keep their box verdict.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from analysis.audit import PIXELS
from analysis.pixel_audit import score_files
from analysis.report_gallery import safe_path
from pipeline.core.dataset import BOX_COORDS, read_manifest, read_part
from pipeline.stages.parts import map_parts, parts_of

PIXEL_SCORES = "pixel_scores.parquet"


def roots_of(manifest: dict) -> dict:
    return {s: m.get("images_root") for s, m in (manifest.get("sources") or {}).items()}


def part_pixels(path: Path, part: Path, rows: int | None, roots: dict) -> np.ndarray:
    """The ``pixels`` score of every image of one part (NaN: no readable file)."""
    rec = read_part(path, part, ["source", "file"], rows)
    paths = [
        safe_path(roots.get(s), f)
        for s, f in zip(rec.column("source").to_pylist(), rec.column("file").to_pylist())
    ]
    return score_files(paths)


def pixel_pass(dataset: Path, cols: dict, sample=None, scheduler: str | None = None) -> dict:
    """Score every part's images, fold the scores into ``cols`` (in place) and into the
    report's ``sample``; returns what ``audit.json`` says about the pass."""
    manifest = read_manifest(dataset)
    roots = roots_of(manifest)
    parts = parts_of(dataset, manifest)
    t0 = time.perf_counter()
    args = [(dataset, p, rows, roots) for p, rows in parts]
    pix, start = [], 0
    grid = np.asarray(cols["grid_score"], float)
    for (part, rows), scores in zip(parts, map_parts(part_pixels, args, scheduler)):
        pix.append(scores)
        n = scores.size
        if sample is not None and np.isfinite(scores).any():
            both = np.where(
                np.isfinite(scores),
                np.fmax(grid[start : start + n], scores),
                grid[start : start + n],
            )
            rec = read_part(
                dataset, part, ["image_id", "source", "file", "boxes"], rows, BOX_COORDS
            )
            sample.consider(rec, both, start)
        start += n
    seconds = time.perf_counter() - t0
    pix = np.concatenate(pix) if pix else np.zeros(0)
    has = np.isfinite(pix)
    before = ~np.asarray(cols["low_evidence"], bool)
    cols[f"{PIXELS}_score"] = np.where(has, pix, 0.0)
    cols["grid_score"] = np.where(has, np.fmax(grid, pix), grid)
    cols["low_evidence"] = np.asarray(cols["low_evidence"], bool) & ~has
    return {
        "images_scored": int(has.sum()),
        "images_without_file": int((~has).sum()),
        "judged_by_pixels_only": int((has & ~before).sum()),
        "seconds": round(seconds, 3),
        "images_per_second": round(float(has.sum() / seconds), 1) if seconds > 0 else None,
        "scheduler": scheduler or "in-process",
    }


def pixel_table(cols: dict) -> pa.Table:
    """``pixel_scores.parquet``: image_id, the pixels score (0 where no file was read)."""
    return pa.table({"image_id": cols["image_id"], f"{PIXELS}_score": cols[f"{PIXELS}_score"]})
