"""Benchmark: ``groundset audit`` as a process vs a hand-written script as a process.

One run measures, on the same synthetic dataset directory (natural-like layouts with 10%
grid images: lattices, shelves, boards, mosaics; at most 30 boxes per image, GLIGEN's
``MAX_BOXES``; built once and cached under ``bench/out/audit-ds-N``):

- **end to end** (the headline): ``groundset audit DS --out DIR`` (report included)
  against ``bench/audit_baseline.py`` (pyarrow read of the records parts, a per-image
  ``cKDTree`` Clark-Evans loop, a Parquet write), both as subprocesses, interleaved so
  that load from other processes hits both alike; median of ``--runs`` runs, the ratio
  of wall times and of CPU times (user + system: the less load-sensitive one), each
  child's peak RSS and the load average before and after;
- **in memory** (a second line only): ``grid_scores_from_arrays`` on arrays already in
  memory vs the same loop in this process;
- optionally (``--rss-images N ...``) ``groundset audit`` and ``groundset curate
  --no-hash`` per size, ``--rss-runs`` rounds, with their median peak RSS (does memory
  grow with the dataset?), the dask path (``--dask-images N``), and (``--by-size``)
  where the core time goes.

Usage: ``python bench/audit.py [--images 250000] [--runs 3] [--core-repeats 1]
[--rss-images 250000 1000000] [--rss-runs 5] [--by-size] [--dask-images 0] [--dense]``.
Prints both lines and writes ``bench/out/audit-N.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

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

sys.path.insert(0, str(Path(__file__).parent))
from audit_baseline import clark_evans_ratios
from processes import run_child


def build(n_images: int, seed: int = 0, dense: bool = False) -> Layouts:
    """``dense``: each natural image holds the boxes of two natural scenes (about 16
    boxes an image in all, as in the issue's 4.1 M boxes on 250,000 images)."""
    n_grid = n_images // 40  # 4 kinds x 2.5% = 10% grid images
    scenes = synthetic_natural(2000, seed + 1)
    natural = synthetic_natural((1 + dense) * (n_images - 4 * n_grid), seed)
    if dense:  # two consecutive scenes become one image
        natural = Layouts(natural.offsets[::2], *natural.arrays()[1:], natural.kind[::2])
    parts = [
        natural,
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
    """The hand-written baseline's loop (bench/audit_baseline.py), in memory."""
    return clark_evans_ratios(lay.offsets, (lay.x0 + lay.x1) / 2, (lay.y0 + lay.y1) / 2)


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


OUT = Path(__file__).resolve().parent / "out"


def shuffled(lay: Layouts, seed: int = 0) -> Layouts:
    """The images in a random order, so every records part holds the same mix (built in
    kind order, the last part would hold all the grid images and most of the boxes)."""
    order = np.random.default_rng(seed).permutation(lay.n_images)
    counts = np.diff(lay.offsets)[order]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    at = np.repeat(lay.offsets[:-1][order] - offsets[:-1], counts) + np.arange(offsets[-1])
    return Layouts(offsets, lay.x0[at], lay.y0[at], lay.x1[at], lay.y1[at], lay.kind[order])


def dataset_dir(n_images: int, dense: bool = False) -> Path:
    """The bench dataset of ``n_images`` (``build``'s layouts, seed 0), written once."""
    from analysis.calibration import to_records
    from pipeline.core.dataset import n_boxes, write_dataset

    path = OUT / f"audit-ds-{n_images}{'-dense' if dense else ''}"
    if (path / "manifest.json").is_file():
        return path
    lay = shuffled(build(n_images, dense=dense))
    rec = to_records(lay, "bench")
    write_dataset(
        path,
        rec,
        None,
        stage="bench",
        inputs=[],
        params={"images": n_images, "seed": 0, "dense": dense},
        images_in=rec.num_rows,
        boxes_in=n_boxes(rec),
    )
    return path


def end_to_end(ds: Path, runs: int) -> dict:
    groundset = shutil.which("groundset", path=str(Path(sys.executable).parent)) or "groundset"
    out = OUT / f"{ds.name}-audit"
    base_out = OUT / f"{ds.name}-baseline.parquet"
    ours = [groundset, "-q", "audit", str(ds), "--out", str(out), "--overwrite"]
    theirs = [sys.executable, str(Path(__file__).with_name("audit_baseline.py")), str(ds)]
    load_before = os.getloadavg()
    g_runs, b_runs = [], []
    for _ in range(runs):
        # run_child: through a launcher, so that this process's memory is not counted
        g_runs.append(run_child(ours, ok=(0, 3)))  # 3: the gate fails (10% grid images)
        b_runs.append(run_child([*theirs, str(base_out)]))
    load_after = os.getloadavg()
    g = statistics.median(r["wall_s"] for r in g_runs)
    b = statistics.median(r["wall_s"] for r in b_runs)
    g_cpu = statistics.median(r["cpu_s"] for r in g_runs)
    b_cpu = statistics.median(r["cpu_s"] for r in b_runs)
    return {
        "runs": runs,
        "groundset_median_s": round(g, 3),
        "groundset_runs_s": [r["wall_s"] for r in g_runs],
        "groundset_cpu_median_s": round(g_cpu, 3),
        "groundset_peak_rss_mib": max(r["peak_rss_mib"] for r in g_runs),
        "baseline_median_s": round(b, 3),
        "baseline_runs_s": [r["wall_s"] for r in b_runs],
        "baseline_cpu_median_s": round(b_cpu, 3),
        "baseline_peak_rss_mib": max(r["peak_rss_mib"] for r in b_runs),
        "speedup": round(b / g, 2),
        "cpu_speedup": round(b_cpu / g_cpu, 2),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
    }


def memory(sizes: list[int], runs: int) -> list[dict]:
    """Peak RSS of ``groundset audit`` and ``groundset curate --no-hash`` processes per
    dataset size, ``runs`` rounds interleaved across sizes, medians: memory must not grow
    with the dataset. One process's peak varies by 10-20 MiB from run to run (when
    freed memory goes back to the system is timing), so one run per size can mislead."""
    groundset = shutil.which("groundset", path=str(Path(sys.executable).parent)) or "groundset"
    samples = {(n, what): [] for n in sizes for what in ("audit", "curate")}
    for _ in range(runs):
        for n in sizes:
            ds = dataset_dir(n)
            for what, cmd, ok in (
                ("audit", ["audit", str(ds), "--out", str(OUT / f"{ds.name}-audit")], (0, 3)),
                (
                    "curate",
                    ["curate", str(ds), "--no-hash", "--out", str(OUT / f"{ds.name}-cur")],
                    (0,),
                ),
            ):
                samples[n, what].append(run_child([groundset, "-q", *cmd, "--overwrite"], ok=ok))
    rows = []
    for n in sizes:
        row = {"images": n, "runs": runs}
        for what in ("audit", "curate"):
            got = samples[n, what]
            row[what] = {
                "seconds": round(statistics.median(r["wall_s"] for r in got), 2),
                "cpu_s": round(statistics.median(r["cpu_s"] for r in got), 2),
                "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in got),
                "peak_rss_mib_runs": [r["peak_rss_mib"] for r in got],
            }
        rows.append(row)
    return rows


def in_memory(n_images: int, repeats: int) -> dict:
    """The inner function on arrays already in memory vs the loop (the old headline)."""
    lay = build(n_images)
    vec, loop = [], []
    for _ in range(repeats):
        t, _, cols = timed(lambda: grid_scores_from_arrays(*lay.arrays()), 1)
        vec.append(t)
        t, _, ce = timed(lambda: clark_evans_loop(lay), 1)
        loop.append(t)
    n = np.diff(lay.offsets).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = 0.5 / np.sqrt(n) + (0.0514 + 0.041 / np.sqrt(n)) * 4 / n
    t_vec, t_loop = statistics.median(vec), statistics.median(loop)
    return {
        "repeats": repeats,
        "groundset_median_s": round(t_vec, 3),
        "loop_median_s": round(t_loop, 3),
        "speedup": round(t_loop / t_vec, 1),
        # the same ratio up to the quantisation of centres, as a mean NN distance
        "clark_evans_max_mean_nn_diff": float(
            np.nanmax(np.abs(cols["clark_evans"] - ce) * expected)
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=250_000)
    ap.add_argument("--runs", type=int, default=3, help="end-to-end runs of each process")
    ap.add_argument("--core-repeats", type=int, default=1, help="0 skips the in-memory line")
    ap.add_argument("--dask-images", type=int, default=0)
    ap.add_argument("--by-size", action="store_true", help="core time by box count")
    ap.add_argument(
        "--dense", action="store_true", help="two natural scenes per image (~16 boxes an image)"
    )
    ap.add_argument(
        "--rss-images",
        type=int,
        nargs="*",
        default=[],
        help="also audit and curate runs per size (e.g. 250000 1000000): seconds, peak RSS",
    )
    ap.add_argument("--rss-runs", type=int, default=5, help="rounds of --rss-images runs")
    args = ap.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ds = dataset_dir(args.images, args.dense)
    manifest = json.loads((ds / "manifest.json").read_text())
    out = {
        "images": manifest["counts"]["images_kept"],
        "boxes": manifest["counts"]["boxes_kept"],
        "dataset": str(ds),
        "dataset_s": round(time.perf_counter() - t0, 2),
        "cpus": os.cpu_count(),
        "end_to_end": end_to_end(ds, args.runs),
    }
    e = out["end_to_end"]
    print(
        f"end to end ({out['images']:,} images, {out['boxes']:,} boxes, median of "
        f"{e['runs']}): groundset audit {e['groundset_median_s']:.2f} s "
        f"(peak RSS {e['groundset_peak_rss_mib']:.0f} MiB) vs baseline script "
        f"{e['baseline_median_s']:.2f} s ({e['baseline_peak_rss_mib']:.0f} MiB): "
        f"{e['speedup']:.1f}x; CPU {e['groundset_cpu_median_s']:.2f} s vs "
        f"{e['baseline_cpu_median_s']:.2f} s: {e['cpu_speedup']:.1f}x; load "
        f"{e['load_before'][0]:.2f} -> {e['load_after'][0]:.2f} on {out['cpus']} cores"
    )
    if args.core_repeats:
        c = out["in_memory"] = in_memory(args.images, args.core_repeats)
        print(
            f"in memory (grid_scores_from_arrays on arrays, median of {c['repeats']}): "
            f"{c['groundset_median_s']:.2f} s vs loop {c['loop_median_s']:.2f} s: "
            f"{c['speedup']:.1f}x"
        )
    if args.rss_images:
        out["memory"] = memory(args.rss_images, args.rss_runs)
        first = out["memory"][0]
        for m in out["memory"]:
            for what in ("audit", "curate"):
                r = m[what]
                ratio = r["peak_rss_mib"] / first[what]["peak_rss_mib"]
                print(
                    f"memory: {what} {m['images']:,} images, median of {m['runs']}: "
                    f"{r['seconds']:.2f} s (CPU {r['cpu_s']:.2f} s), peak RSS "
                    f"{r['peak_rss_mib']:.0f} MiB ({ratio:.2f}x the first size's; runs "
                    f"{', '.join(f'{x:.0f}' for x in r['peak_rss_mib_runs'])})"
                )
    if args.by_size:
        out["by_size"] = by_size(build(args.images))
    if args.dask_images:
        out["dask"] = dask_run(build(args.dask_images), args.dask_images)
    path = OUT / f"audit-{args.images}{'-dense' if args.dense else ''}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
