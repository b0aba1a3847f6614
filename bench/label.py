"""Benchmark the label stage against bare ultralytics, and 1 against 2 workers, in one run.

    python bench/label.py [--images DIR] [--weights PATH] [--n 64] [--repeats 3]

Two questions, on the same images and weights:

1. Overhead: how much slower is ``pipeline.stages.label.run.label`` (listing, decoding with EXIF
   and mode handling, sharded atomic writes, record assembly, the dataset write) than a
   bare ``YOLO.predict(stream=True)`` loop over the same files? Both run in this process
   with the model already loaded, alternating A/B so machine-load drift hits both.
   Goal: at most 10% slower.
2. Scaling: images/s of ``--workers 2`` (a dask LocalCluster, one model and one
   inference thread per process) against one worker with one thread
   (``--workers 1 --threads 1``), measured over the detection phase; cluster and model
   start-up are reported separately. Goal: 1.6x. Also reported: against ``--workers 1``
   with the backend's default threading (OpenVINO takes every core), which is what a
   user who does not pass ``--workers`` gets.

Medians over ``--repeats`` and the load average before and after are printed and
written as JSON, because on a shared machine the numbers move with other people's work.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"

from detectors.offline import go_offline
from pipeline.core.images import list_images
from pipeline.stages.label.run import label


def _copy_images(src: Path, n: int, dst: Path) -> list[Path]:
    dst.mkdir(parents=True)
    files = list_images(src).files[:n]
    for f in files:
        target = dst / Path(f).name
        try:
            os.link(src / f, target)
        except OSError:
            shutil.copy(src / f, target)
    return sorted(dst.iterdir())


def bare_loop(model, paths, opts) -> tuple[float, float]:
    """Wall and CPU seconds (this process, all threads) of a plain predict loop."""
    t, c = time.perf_counter(), time.process_time()
    n = 0
    for r in model.predict([str(p) for p in paths], stream=True, verbose=False, **opts):
        n += len(r.boxes)
    return time.perf_counter() - t, time.process_time() - c


def groundset(images, out, weights, opts, workers, shard_size, threads=None):
    """Wall seconds, the manifest's timing, and this process's CPU seconds of a label run."""
    shutil.rmtree(out, ignore_errors=True)
    t, c = time.perf_counter(), time.process_time()
    m = label(images, out, weights, workers=workers, shard_size=shard_size, threads=threads, **opts)
    return time.perf_counter() - t, m["timing"], time.process_time() - c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, default=SHARED / "coco128/images/val2017")
    p.add_argument(
        "--weights", type=Path, default=SHARED / "yolov8n_int8_openvino/yolov8n_int8_openvino_model"
    )
    p.add_argument("--n", type=int, default=64, help="images for the overhead comparison")
    p.add_argument("--n-scaling", type=int, default=128, help="images for 1 vs 2 workers")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shard-size", type=int, default=16)
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "label_results.json")
    a = p.parse_args()
    if not a.images.is_dir() or not a.weights.exists():
        sys.exit(f"bench/label.py: need --images and --weights (missing {a.images} or {a.weights})")
    os.environ["GROUNDSET_QUIET"] = "1"
    go_offline()
    from ultralytics import YOLO

    opts = {"conf": 0.25, "iou": 0.7, "max_det": 300, "imgsz": 640}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-label-") as tmp:
        tmp = Path(tmp)
        small = _copy_images(a.images, a.n, tmp / "small")
        _copy_images(a.images, a.n_scaling, tmp / "big")
        model = YOLO(str(a.weights), task="detect")
        bare_loop(model, small[:2], opts)  # warm-up: predictor setup
        groundset(tmp / "small", tmp / "o", a.weights, opts, 1, a.shard_size)  # loads the cache

        bare, ours = [], []
        for _ in range(a.repeats):
            bare.append(bare_loop(model, small, opts))
            ours.append(groundset(tmp / "small", tmp / "o", a.weights, opts, 1, a.shard_size))
        w1, w1all, w2 = [], [], []
        for _ in range(a.repeats):
            w1.append(groundset(tmp / "big", tmp / "o1", a.weights, opts, 1, a.shard_size, 1))
            w2.append(groundset(tmp / "big", tmp / "o2", a.weights, opts, 2, a.shard_size))
            w1all.append(groundset(tmp / "big", tmp / "o3", a.weights, opts, 1, a.shard_size))

    med = statistics.median
    thr = [[a.n_scaling / t["detect_s"] for _, t, _ in runs] for runs in (w1, w2, w1all)]
    # CPU ms per image in the detection phase (worker processes included)
    cpu = [[1000 * t["cpu_s"] / a.n_scaling for _, t, _ in runs] for runs in (w1, w2, w1all)]
    bare_wall, bare_cpu = [w for w, _ in bare], [c for _, c in bare]
    ours_wall, ours_cpu = [w for w, _, _ in ours], [c for _, _, c in ours]
    res = {
        "images": str(a.images),
        "weights": str(a.weights),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "overhead": {
            "n_images": a.n,
            "bare_s": bare_wall,
            "groundset_s": ours_wall,
            "bare_cpu_s": bare_cpu,
            "groundset_cpu_s": ours_cpu,
            "bare_img_per_s": a.n / med(bare_wall),
            "groundset_img_per_s": a.n / med(ours_wall),
            "overhead_pct": 100 * (med(ours_wall) / med(bare_wall) - 1),
            "goal_pct": 10,
            "cpu_overhead_pct": 100 * (med(ours_cpu) / med(bare_cpu) - 1),
        },
        "scaling": {
            "n_images": a.n_scaling,
            "shard_size": a.shard_size,
            "workers1_threads1_img_per_s": thr[0],
            "workers2_img_per_s": thr[1],
            "workers1_default_threads_img_per_s": thr[2],
            "cpu_ms_per_img": {
                "workers1_threads1": cpu[0],
                "workers2": cpu[1],
                "workers1_default_threads": cpu[2],
            },
            "workers1_threads1_wall_s": [w for w, _, _ in w1],
            "workers2_wall_s": [w for w, _, _ in w2],
            "workers2_startup_s": [t["startup_s"] for _, t, _ in w2],
            "speedup": med(thr[1]) / med(thr[0]),
            "goal": 1.6,
            "speedup_vs_default_threads": med(thr[1]) / med(thr[2]),
            "speedup_wall": med(w for w, _, _ in w1) / med(w for w, _, _ in w2),
            # what 2 workers would give on 2 otherwise idle cores, if CPU cost per image
            # is all that limits them: 2 x (cost with 1 worker) / (cost with 2 workers)
            "projected_speedup_idle_cores": 2 * med(cpu[0]) / med(cpu[1]),
        },
    }
    a.json.write_text(json.dumps(res, indent=2) + "\n")
    o, s = res["overhead"], res["scaling"]
    print(
        f"overhead: bare {o['bare_img_per_s']:.2f} img/s, groundset {o['groundset_img_per_s']:.2f}"
        f" img/s -> {o['overhead_pct']:+.1f}% wall (goal <= +10%), "
        f"{o['cpu_overhead_pct']:+.1f}% CPU time"
    )
    print(
        f"scaling: 1 worker x 1 thread {med(thr[0]):.2f} img/s, 2 workers {med(thr[1]):.2f} "
        f"img/s -> {s['speedup']:.2f}x (goal >= 1.6x); end to end incl. start-up "
        f"{s['speedup_wall']:.2f}x"
    )
    print(
        f"         1 worker, default threads {med(thr[2]):.2f} img/s -> 2 workers are "
        f"{s['speedup_vs_default_threads']:.2f}x that"
    )
    print(
        f"         CPU ms/img: 1x1 {med(cpu[0]):.0f}, 2 workers {med(cpu[1]):.0f}, 1 default "
        f"{med(cpu[2]):.0f} -> projected on 2 idle cores "
        f"{s['projected_speedup_idle_cores']:.2f}x"
    )
    print(
        f"load average before {load_before}, after {res['loadavg_after']} on {os.cpu_count()} cpus"
    )


if __name__ == "__main__":
    main()
