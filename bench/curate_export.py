"""Benchmark curate and the exports on a synthetic dataset of realistic size.

Builds N images with COCO-like box counts (about 7 boxes per image, wide size spread)
through the real writer, then times, in one run:

- ``curate`` end to end (read, dedupe by source+file, GLIGEN filters, split, write) and
  its in-memory part (``curate_records``) against a plain Python per-box loop doing only
  the filtering (the baseline a first version would write);
- ``export coco`` of the curated dataset;
- ``export yolo`` and ``export gligen-tsv`` on a subset whose images exist on disk.

Usage: python bench/curate_export.py [--images 150000] [--with-files 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.core.dataset import read_dataset, write_dataset
from pipeline.core.records import assemble
from pipeline.stages.curate import curate, curate_records
from pipeline.stages.export.coco import export_coco
from pipeline.stages.export.gligen_tsv import export_gligen_tsv
from pipeline.stages.export.yolo import export_yolo


def build(out: Path, n: int, seed: int, root: Path | None = None) -> Path:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(7.3, size=n)
    owner = np.repeat(np.arange(n), counts)
    m = owner.size
    side = np.exp(rng.uniform(np.log(0.02), np.log(0.9), size=(m, 2)))
    x0, y0 = rng.uniform(0, 1 - side[:, 0]), rng.uniform(0, 1 - side[:, 1])
    cats = np.array([f"class{i}" for i in range(80)], dtype=object)[rng.integers(0, 80, m)]
    images = {
        "image_id": [f"syn:{i}" for i in range(n)],
        "source": ["syn"] * n,
        "file": [f"{i % 2000:06d}.jpg" if root else f"{i:09d}.jpg" for i in range(n)],
        "width": np.full(n, 640),
        "height": np.full(n, 480),
        "captions": [[f"a photo number {i} with a class1"] for i in range(n)],
    }
    boxes = {
        "image_index": owner,
        "phrase": cats,
        "category": cats,
        "x0": x0,
        "y0": y0,
        "x1": x0 + side[:, 0],
        "y1": y0 + side[:, 1],
        "score": np.ones(m, np.float32),
        "origin": ["bench"] * m,
    }
    write_dataset(
        out,
        assemble(images, boxes),
        None,
        stage="bench",
        inputs=[],
        params={},
        images_in=n,
        boxes_in=m,
        sources={"syn": {"images_root": str(root) if root else None}},
    )
    return out


def python_loop_filter(records, min_area=0.01, max_boxes=30):
    """Baseline: the obvious per-image, per-box Python code."""
    kept = []
    for rec in records.column("boxes").to_pylist():
        area = [(b["x1"] - b["x0"]) * (b["y1"] - b["y0"]) for b in rec]
        big = sorted((i for i, a in enumerate(area) if a >= min_area), key=lambda i: -area[i])
        kept.append([rec[i] for i in sorted(big[:max_boxes])])
    return kept


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=150_000)
    ap.add_argument("--with-files", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        src = build(d / "src", args.images, 0)
        records = read_dataset(src).records
        n_boxes = int(sum(len(b) for b in records.column("boxes").to_pylist()))
        t_base = timed(lambda: python_loop_filter(records), args.repeat)
        t_core = timed(lambda: curate_records(records, {}, hash_images=False), args.repeat)
        t_curate = timed(lambda: curate([src], d / "cur", hash_images=False), args.repeat)
        t_coco = timed(lambda: export_coco(d / "cur", d / "coco"), args.repeat)

        root = d / "imgs"
        root.mkdir()
        from PIL import Image

        for i in range(min(args.with_files, 2000)):
            Image.new("RGB", (640, 480), (i % 256, 0, 0)).save(root / f"{i:06d}.jpg")
        small = build(d / "small", args.with_files, 1, root)
        t_yolo = timed(lambda: export_yolo(small, d / "yolo"), args.repeat)
        t_tsv = timed(lambda: export_gligen_tsv(small, d / "g.tsv"), args.repeat)
        result = {
            "images": args.images,
            "boxes": n_boxes,
            "curate_end_to_end_s": round(t_curate, 3),
            "curate_in_memory_s": round(t_core, 3),
            "python_loop_filter_only_s": round(t_base, 3),
            "in_memory_speedup_vs_loop": round(t_base / t_core, 2),
            "export_coco_s": round(t_coco, 3),
            "coco_mb": round((d / "coco" / "instances.json").stat().st_size / 1e6, 1),
            "files_images": args.with_files,
            "export_yolo_s": round(t_yolo, 3),
            "export_gligen_tsv_s": round(t_tsv, 3),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
