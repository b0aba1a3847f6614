"""Benchmark ``groundset label`` against a bare ultralytics loop, both as processes, in one run.

    python bench/label.py [--images DIR] [--weights PATH] [--repeats 3] [--no-scaling]
                          [--inproc-n 64] [--inproc-repeats 3]

On the same images and weights (by default the 128 coco128 ``val2017`` JPEGs and the
shared YOLOv8n OpenVINO INT8 model), one interleaved loop of child processes
(``bench/processes.py``: wall and CPU seconds and peak RSS from ``os.wait4``, medians of
``--repeats``, the load average before and after):

1. **the headline**: ``groundset -q label --images DIR --weights W --out ...`` (interpreter
   start, imports, listing, decoding with EXIF and mode handling, detection, record
   assembly, sharded atomic writes, the dataset write and its report) against
   ``bench/label_baseline.py`` (a bare ``YOLO.predict(stream=True)`` loop writing one
   Parquet file). Goal: at most 10% slower.
2. **scaling**: the whole command with ``--workers 2`` (a dask LocalCluster, one model
   and one inference thread per process) against ``--workers 1 --threads 1``; the
   detection phase alone (each run's ``timing``, which label appends to the file named by
   ``GROUNDSET_TIMING_LOG``) is given beside it, since cluster start-up is a fixed cost
   that only long folders amortise. Goal: 1.6x.

A second line, in-process, keeps the older figure: ``pipeline.stages.label.run.label``
against ``YOLO.predict`` with the model already loaded in this process, alternating
(``--inproc-repeats 0`` skips it).

Everything is printed and written to ``bench/out/label.json`` (gitignored).
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
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from processes import OUT, interleaved, load_line, ratios

BASE, OURS = "baseline: bare YOLO.predict loop", "groundset label"
W1, W2 = "groundset label --workers 1 --threads 1", "groundset label --workers 2"
OPTS = {"conf": 0.25, "iou": 0.7, "max_det": 300, "imgsz": 640}  # label's defaults


def _copy_images(src: Path, n: int, dst: Path) -> list[Path]:
    from pipeline.core.images import list_images

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
    from pipeline.stages.label.run import label

    shutil.rmtree(out, ignore_errors=True)
    t, c = time.perf_counter(), time.process_time()
    m = label(images, out, weights, workers=workers, shard_size=shard_size, threads=threads, **opts)
    return time.perf_counter() - t, m["timing"], time.process_time() - c


def processes(a, n_images: int) -> dict:
    """The headline and scaling lines: every contender a child process, interleaved."""
    from detectors.offline import OFFLINE_ENV
    from pipeline.stages.label.run import TIMING_LOG

    groundset = shutil.which("groundset", path=str(Path(sys.executable).parent)) or "groundset"
    work = a.work
    timing_log = work / "timing.jsonl"  # label keeps timings out of its dataset directory
    env = {**os.environ, **OFFLINE_ENV, "YOLO_VERBOSE": "False", TIMING_LOG: str(timing_log)}
    outs = {OURS: work / "groundset", W1: work / "w1", W2: work / "w2"}
    label = [groundset, "-q", "label", "--images", str(a.images), "--weights", str(a.weights)]
    methods = {
        BASE: [
            sys.executable,
            str(Path(__file__).with_name("label_baseline.py")),
            str(a.images),
            str(a.weights),
            str(work / "baseline.parquet"),
        ],
        OURS: [*label, "--out", str(outs[OURS]), "--overwrite"],
    }
    if a.scaling:
        methods[W1] = [*label, "--out", str(outs[W1]), "--overwrite", "--workers", "1"]
        methods[W1] += ["--threads", "1"]
        methods[W2] = [*label, "--out", str(outs[W2]), "--overwrite", "--workers", "2"]
    work.mkdir(parents=True, exist_ok=True)

    def detect_phase(name):
        """img/s of the detection phase alone, from the run's timing log (not the baseline)."""
        if name not in outs:
            return None
        runs = [json.loads(line) for line in timing_log.read_text().splitlines()]
        t = next(r for r in reversed(runs) if Path(r["out"]).resolve() == outs[name].resolve())
        return {"detect_img_per_s": round(t["images"] / t["detect_s"], 2), "timing": t}

    res = interleaved(methods, a.repeats, env=env, after=detect_phase)
    res["images"] = n_images
    for m in res["methods"].values():
        m["img_per_s"] = round(n_images / m["median_wall_s"], 2)
        if "detect_img_per_s" in m["runs"][0]:
            m["median_detect_img_per_s"] = statistics.median(
                r["detect_img_per_s"] for r in m["runs"]
            )
    r = res["overhead"] = ratios(res, BASE, OURS)
    r["overhead_pct_wall"] = round(100 * (1 / r["wall"] - 1), 1)
    r["overhead_pct_cpu"] = round(100 * (1 / r["cpu"] - 1), 1)
    if a.scaling:
        r = ratios(res, W1, W2)
        d = [res["methods"][k]["median_detect_img_per_s"] for k in (W1, W2)]
        res["scaling"] = {
            "wall": r["wall"],  # speed-up of 2 workers: W1 time / W2 time
            "cpu_cost": round(1 / r["cpu"], 3),  # CPU seconds of 2 workers / of 1 (start-up too)
            "detect_phase": round(d[1] / d[0], 3),
        }
    return res


def in_process(a) -> dict:
    """The older figure: the stage function vs YOLO.predict, model loaded in this process."""
    from detectors.offline import go_offline

    go_offline()
    os.environ["GROUNDSET_QUIET"] = "1"
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory(prefix="bench-label-") as tmp:
        tmp = Path(tmp)
        small = _copy_images(a.images, a.inproc_n, tmp / "small")
        model = YOLO(str(a.weights), task="detect")
        bare_loop(model, small[:2], OPTS)  # warm-up: predictor setup
        groundset(tmp / "small", tmp / "o", a.weights, OPTS, 1, 16)  # loads the model cache
        bare, ours = [], []
        for _ in range(a.inproc_repeats):
            bare.append(bare_loop(model, small, OPTS))
            ours.append(groundset(tmp / "small", tmp / "o", a.weights, OPTS, 1, 16))
    med = statistics.median
    bw, bc = med(w for w, _ in bare), med(c for _, c in bare)
    ow, oc = med(w for w, _, _ in ours), med(c for _, _, c in ours)
    return {
        "n_images": a.inproc_n,
        "repeats": a.inproc_repeats,
        "bare_s": [round(w, 3) for w, _ in bare],
        "groundset_s": [round(w, 3) for w, _, _ in ours],
        "bare_img_per_s": round(a.inproc_n / bw, 2),
        "groundset_img_per_s": round(a.inproc_n / ow, 2),
        "overhead_pct_wall": round(100 * (ow / bw - 1), 1),
        "overhead_pct_cpu": round(100 * (oc / bc - 1), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, default=SHARED / "coco128/images/val2017")
    p.add_argument(
        "--weights", type=Path, default=SHARED / "yolov8n_int8_openvino/yolov8n_int8_openvino_model"
    )
    p.add_argument("--repeats", type=int, default=3, help="rounds of the process loop")
    p.add_argument("--no-scaling", dest="scaling", action="store_false", help="skip 1 vs 2 workers")
    p.add_argument("--inproc-n", type=int, default=64, help="images for the in-process line")
    p.add_argument("--inproc-repeats", type=int, default=3, help="0 skips the in-process line")
    p.add_argument("--work", type=Path, default=OUT / "label", help="the processes' outputs")
    p.add_argument("--json", type=Path, default=OUT / "label.json")
    a = p.parse_args()
    if not a.images.is_dir() or not a.weights.exists():
        sys.exit(f"bench/label.py: need --images and --weights (missing {a.images} or {a.weights})")
    from pipeline.core.images import list_images

    n_images = len(list_images(a.images).files)
    res = {"images": str(a.images), "weights": str(a.weights), "cpus": os.cpu_count()}
    res["processes"] = pr = processes(a, n_images)
    o = pr["overhead"]
    b, g = pr["methods"][BASE], pr["methods"][OURS]
    print(
        f"\nas processes ({n_images} images, median of {a.repeats}, {load_line(pr)}):\n"
        f"  baseline script {b['median_wall_s']:.2f} s ({b['img_per_s']:.2f} img/s, "
        f"{b['median_cpu_s']:.1f} s CPU, {b['peak_rss_mib']:.0f} MiB), groundset label "
        f"{g['median_wall_s']:.2f} s ({g['img_per_s']:.2f} img/s, {g['median_cpu_s']:.1f} s CPU, "
        f"{g['peak_rss_mib']:.0f} MiB): {o['overhead_pct_wall']:+.1f}% wall, "
        f"{o['overhead_pct_cpu']:+.1f}% CPU (goal <= +10%)"
    )
    if a.scaling:
        s, m1, m2 = pr["scaling"], pr["methods"][W1], pr["methods"][W2]
        print(
            f"  scaling, whole command: --workers 1 --threads 1 {m1['median_wall_s']:.2f} s, "
            f"--workers 2 {m2['median_wall_s']:.2f} s -> {s['wall']:.2f}x (goal >= 1.6x); "
            f"CPU {m1['median_cpu_s']:.1f} s vs {m2['median_cpu_s']:.1f} s ({s['cpu_cost']:.2f}x)\n"
            f"  scaling, detection phase only (run timing log): "
            f"{m1['median_detect_img_per_s']:.2f} -> {m2['median_detect_img_per_s']:.2f} img/s "
            f"-> {s['detect_phase']:.2f}x"
        )
    if a.inproc_repeats:
        res["in_process"] = ip = in_process(a)
        print(
            f"in process, second line ({ip['n_images']} images, median of {ip['repeats']}): bare "
            f"loop {ip['bare_img_per_s']:.2f} img/s, label() {ip['groundset_img_per_s']:.2f} "
            f"img/s -> {ip['overhead_pct_wall']:+.1f}% wall, {ip['overhead_pct_cpu']:+.1f}% CPU"
        )
    res["loadavg_end"] = list(os.getloadavg())
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=2) + "\n")
    print(f"-> {a.json}")


if __name__ == "__main__":
    main()
