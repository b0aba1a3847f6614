"""Benchmark: groundset's vectorised layout audit vs a per-image Python loop.

One run, one synthetic layout set of >= 1,000,000 images (natural-like layouts with 10%
grid images: lattices, shelves, boards, mosaics; at most 30 boxes per image, GLIGEN's
``MAX_BOXES``). It times

- groundset: ``grid_scores_from_arrays`` -- every component (Clark-Evans, NN spread,
  alignment, size homogeneity, periodicity, seams, tiles) plus ``grid_score``; on one
  thread (the headline) and on ``os.cpu_count()`` threads (``groundset audit`` uses half
  the cores, at most 4);
- baseline: a per-image Python loop computing only the Clark-Evans ratio with
  ``scipy.spatial.cKDTree`` (what one would write by hand);
- optionally (``--dask-images N``) the dask path: N images written as a dataset with
  several records parts, audited with ``--scheduler processes``.

Usage: ``python bench/audit.py [--images 1000000] [--repeats 3] [--baseline-repeats 3]
[--by-size] [--dask-images 0]``. The contenders run interleaved, so load from other
processes hits both alike. Prints a JSON line with medians and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from analysis.calibration import (
    Layouts,
    boards,
    concat,
    lattice,
    mosaics,
    shelf_rows,
    synthetic_natural,
)
from analysis.layout_stats import grid_scores_from_arrays
from pipeline.core.defaults import MAX_BOXES


def build(n_images: int, seed: int = 0) -> Layouts:
    n_grid = n_images // 40  # 4 kinds x 2.5% = 10% grid images
    scenes = synthetic_natural(2000, seed + 1)
    parts = [
        synthetic_natural(n_images - 4 * n_grid, seed),
        lattice(n_grid, seed + 2),
        shelf_rows(n_grid, seed + 3),
        boards(n_grid, seed + 4),
        mosaics(n_grid, seed + 5, scenes),
    ]
    lay = concat(parts)
    counts = np.diff(lay.offsets)
    within = np.arange(lay.x0.size) - np.repeat(lay.offsets[:-1], counts)
    keep = within < MAX_BOXES
    new_counts = np.minimum(counts, MAX_BOXES)
    return Layouts(
        np.concatenate([[0], np.cumsum(new_counts)]),
        lay.x0[keep],
        lay.y0[keep],
        lay.x1[keep],
        lay.y1[keep],
        lay.kind,
    )


def clark_evans_loop(lay: Layouts) -> np.ndarray:
    """The hand-written baseline: one cKDTree per image."""
    cx, cy = (lay.x0 + lay.x1) / 2, (lay.y0 + lay.y1) / 2
    out = np.full(lay.n_images, np.nan)
    off = lay.offsets
    for k in range(lay.n_images):
        a, b = off[k], off[k + 1]
        n = b - a
        if n < 2:
            continue
        pts = np.column_stack([cx[a:b], cy[a:b]])
        d, _ = cKDTree(pts).query(pts, k=2)
        expected = 0.5 / np.sqrt(n) + (0.0514 + 0.041 / np.sqrt(n)) * 4 / n
        out[k] = d[:, 1].mean() / expected
    return out


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, result


def dask_run(lay: Layouts, n: int) -> dict:
    from analysis.calibration import to_records
    from pipeline.core import dataset as ds_mod
    from pipeline.core.dataset import n_boxes, write_dataset
    from pipeline.stages.audit import dataset_stats

    sub = lay.subset(np.arange(lay.n_images) < n)
    rec = to_records(sub, "bench")
    with tempfile.TemporaryDirectory() as tmp:
        old = ds_mod.ROWS_PER_PART
        ds_mod.ROWS_PER_PART = max(1, n // 8)  # several parts, one dask task each
        try:
            write_dataset(
                Path(tmp) / "d",
                rec,
                None,
                stage="bench",
                inputs=[],
                params={},
                images_in=rec.num_rows,
                boxes_in=n_boxes(rec),
            )
        finally:
            ds_mod.ROWS_PER_PART = old
        t_in, _, _ = timed(lambda: dataset_stats(Path(tmp) / "d"), 1)
        t_dask, _, _ = timed(lambda: dataset_stats(Path(tmp) / "d", "processes"), 1)
    return {
        "dask_images": n,
        "in_process_s": t_in,
        "dask_processes_s": t_dask,
        "cpus": os.cpu_count(),
    }


def by_size(lay: Layouts) -> dict:
    """Where the time goes: pairwise statistics grow with n^2, the tree loop does not."""
    counts = np.diff(lay.offsets)
    res = {}
    for name, mask in (("n<=15", counts <= 15), ("n>15", counts > 15)):
        sub = lay.subset(mask)
        t_vec, _, _ = timed(lambda s=sub: grid_scores_from_arrays(*s.arrays()), 1)
        t_loop, _, _ = timed(lambda s=sub: clark_evans_loop(s), 1)
        res[name] = {
            "images": sub.n_images,
            "groundset_s": round(t_vec, 3),
            "loop_s": round(t_loop, 3),
            "speedup": round(t_loop / t_vec, 1),
        }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-repeats", type=int, default=3)
    ap.add_argument("--dask-images", type=int, default=0)
    ap.add_argument(
        "--by-size",
        action="store_true",
        help="also time both on images with <= 15 and > 15 boxes separately",
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    lay = build(args.images)
    build_s = time.perf_counter() - t0
    n_boxes = int(lay.x0.size)
    # Interleave the contenders so that load from other processes hits both alike.
    threads = os.cpu_count() or 1
    vec_runs, thr_runs, loop_runs = [], [], []
    for r in range(args.repeats):
        t, _, cols = timed(lambda: grid_scores_from_arrays(*lay.arrays()), 1)
        vec_runs.append(t)
        t, _, _ = timed(lambda: grid_scores_from_arrays(*lay.arrays(), workers=threads), 1)
        thr_runs.append(t)
        if r < args.baseline_repeats:
            t, _, ce = timed(lambda: clark_evans_loop(lay), 1)
            loop_runs.append(t)
    t_vec, t_thr, t_loop = (statistics.median(v) for v in (vec_runs, thr_runs, loop_runs))
    # the same Clark-Evans ratio, up to the 1/16384 quantisation of centres: compare the
    # mean NN distance it implies, in image units
    n = np.diff(lay.offsets).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = 0.5 / np.sqrt(n) + (0.0514 + 0.041 / np.sqrt(n)) * 4 / n
    max_nn_diff = float(np.nanmax(np.abs(cols["clark_evans"] - ce) * expected))
    out = {
        "images": lay.n_images,
        "boxes": n_boxes,
        "build_s": round(build_s, 2),
        "groundset_median_s": round(t_vec, 3),
        "groundset_runs_s": [round(t, 3) for t in vec_runs],
        "loop_median_s": round(t_loop, 3),
        "loop_runs_s": [round(t, 3) for t in loop_runs],
        "speedup": round(t_loop / t_vec, 1),
        "threads": threads,
        "groundset_threaded_median_s": round(t_thr, 3),
        "groundset_threaded_runs_s": [round(t, 3) for t in thr_runs],
        "speedup_threaded": round(t_loop / t_thr, 1),
        "groundset_us_per_image": round(t_vec / lay.n_images * 1e6, 2),
        "loop_us_per_image": round(t_loop / lay.n_images * 1e6, 2),
        "clark_evans_max_mean_nn_diff": max_nn_diff,
    }
    if args.by_size:
        out["by_size"] = by_size(lay)
    if args.dask_images:
        out["dask"] = dask_run(lay, args.dask_images)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
