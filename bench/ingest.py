"""Benchmark: ``groundset ingest coco`` against pycocotools + a Python loop, and bare json.load.

It builds a COCO instances file of at least 1,000,000 boxes by tiling the real COCO
subsets in ``../shared/data`` (polygons, RLE crowd masks, the real per-box byte size,
train2017's ~7-8 boxes per image), then times three things in ONE run, each in its own
child process so that peak RSS is measured per step (``os.wait4``):

1. baseline: ``pycocotools.coco.COCO(file)`` + a Python loop over images and
   annotations that builds rows and writes one Parquet file;
2. bare ``json.load`` of the file;
3. ``groundset ingest coco`` (the real CLI, as a subprocess).

Medians of wall and CPU time (user + sys, less sensitive to other load), peak RSS, the
ratios and the load average before and after are printed and written to
``bench/out/ingest-N.json``.

Usage: ``python bench/ingest.py [--boxes 1000000] [--repeat 3] [--skip-json-load]``. The
big file is written to ``bench/out/`` (gitignored) and reused when it has the right size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from processes import interleaved, load_line, ratios, write_json

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SUBSETS = [
    "coco_instances_val2017_subsets/cocotiny_instances_val2017_80img.json",
    "coco_instances_val2017_subsets/cocomini_instances_val2017_79img.json",
    "coco128/coco_json_train2017_first128/instances_train2017_first128.json",
]
OUT = ROOT / "bench" / "out"
# Offsets that keep tiled ids unique: real image ids are < 10**6, annotation ids
# (crowd ids included, e.g. 908400553664) are < 10**13.
IMAGE_ID_STRIDE = 10**6
ANN_ID_STRIDE = 10**13


def build_file(path: Path, min_boxes: int) -> dict:
    """Tile the real subsets until ``min_boxes`` annotations; stream JSON to ``path``."""
    subsets = [json.loads((SHARED / s).read_text()) for s in SUBSETS]
    # The subsets share a few images; keep each id once, as in a real COCO file.
    images = list({im["id"]: im for d in subsets for im in d["images"]}.values())
    anns = list({a["id"]: a for d in subsets for a in d["annotations"]}.values())
    categories = subsets[0]["categories"]
    licenses = next((d["licenses"] for d in subsets if d.get("licenses")), [])
    tiles = -(-min_boxes // len(anns))
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write('{"info":{"description":"groundset bench: tiled COCO val/train subsets"},')
        f.write(f'"licenses":{dumps(licenses)},"images":[')
        for t in range(tiles):
            chunk = [{**im, "id": im["id"] + t * IMAGE_ID_STRIDE} for im in images]
            f.write(("," if t else "") + dumps(chunk)[1:-1])
        f.write('],"annotations":[')
        for t in range(tiles):
            chunk = [
                {
                    **a,
                    "id": a["id"] + t * ANN_ID_STRIDE,
                    "image_id": a["image_id"] + t * IMAGE_ID_STRIDE,
                }
                for a in anns
            ]
            f.write(("," if t else "") + dumps(chunk)[1:-1])
        f.write(f'],"categories":{dumps(categories)}}}')
    os.replace(tmp, path)
    info = {"images": tiles * len(images), "boxes": tiles * len(anns), "bytes": path.stat().st_size}
    path.with_suffix(".info.json").write_text(json.dumps(info))
    return info


def ensure_file(min_boxes: int) -> tuple[Path, dict]:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"instances_tiled_{min_boxes}.json"
    info_path = path.with_suffix(".info.json")
    if path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info["bytes"] == path.stat().st_size:
            return path, info
    print(f"building {path} ...", flush=True)
    return path, build_file(path, min_boxes)


BASELINE = r"""
import sys, pyarrow as pa, pyarrow.parquet as pq
from pycocotools.coco import COCO
coco = COCO(sys.argv[1])
names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
rows = []
for img_id, img in coco.imgs.items():
    W, H = img["width"], img["height"]
    boxes = []
    for a in coco.imgToAnns.get(img_id, []):
        if a.get("iscrowd", 0):
            continue
        x, y, w, h = a["bbox"]
        x0, y0 = max(0.0, min(x, W)) / W, max(0.0, min(y, H)) / H
        x1, y1 = max(0.0, min(x + w, W)) / W, max(0.0, min(y + h, H)) / H
        if x1 <= x0 or y1 <= y0:
            continue
        name = names[a["category_id"]]
        boxes.append({"phrase": name, "category": name, "x0": x0, "y0": y0, "x1": x1,
                      "y1": y1, "score": 1.0, "origin": "coco"})
    rows.append({"image_id": f"coco:{img_id}", "source": "coco", "file": img["file_name"],
                 "width": W, "height": H, "captions": [], "license": str(img.get("license", "")),
                 "split": "", "boxes": boxes})
pq.write_table(pa.Table.from_pylist(rows), sys.argv[2])
"""

JSON_LOAD = "import json, sys\nwith open(sys.argv[1]) as f: json.load(f)\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", type=int, default=1_000_000, help="minimum number of boxes")
    ap.add_argument("--repeat", type=int, default=3, help="runs per method; medians are reported")
    ap.add_argument(
        "--skip-baseline", action="store_true", help="time groundset and json.load only"
    )
    ap.add_argument("--skip-json-load", action="store_true", help="leave the json.load line out")
    args = ap.parse_args()
    if not (SHARED / SUBSETS[0]).is_file():
        raise SystemExit(f"{SHARED} is missing: this benchmark tiles the real COCO subsets there")
    path, info = ensure_file(args.boxes)
    mib = info["bytes"] / 2**20
    print(f"file: {path} ({mib:.0f} MiB, {info['images']} images, {info['boxes']} boxes)")

    py = sys.executable
    out = OUT / "ingest_out"
    ours = "groundset ingest coco"
    base = "baseline pycocotools+loop"
    methods = {
        ours: [
            py,
            "-m",
            "pipeline.cli",
            "--quiet",
            "ingest",
            "coco",
            "--instances",
            str(path),
            "--source",
            "bench",
            "--out",
            str(out),
            "--overwrite",
        ],
    }
    if not args.skip_json_load:
        methods["json.load"] = [py, "-c", JSON_LOAD, str(path)]
    if not args.skip_baseline:
        methods[base] = [py, "-c", BASELINE, str(path), str(OUT / "baseline.parquet")]
    # interleaved: machine load hits every method alike
    res = interleaved(methods, args.repeat)
    res.update(file=str(path), file_mib=round(mib, 1), images=info["images"], boxes=info["boxes"])

    print(f"\nmedians over {args.repeat} runs, file {mib:.0f} MiB, {load_line(res)}:")
    for name, m in res["methods"].items():
        rss = m["peak_rss_mib"]
        print(
            f"  {name:28s} {m['median_wall_s']:7.2f} s wall {m['median_cpu_s']:7.2f} s CPU  "
            f"peak RSS {rss:7.0f} MiB ({rss / mib:.2f}x file)"
        )
    g_rss = res["methods"][ours]["peak_rss_mib"]
    if base in res["methods"]:
        r = res["speedup_vs_baseline"] = ratios(res, base, ours)
        print(
            f"\nspeed-up vs baseline: {r['wall']:.1f}x wall, {r['cpu']:.1f}x CPU time "
            f"(goal >= 5x: {'met' if r['wall'] >= 5 else 'NOT met'})"
        )
    if "json.load" in res["methods"]:
        r = res["speedup_vs_json_load"] = ratios(res, "json.load", ours)
        print(f"speed-up vs json.load: {r['wall']:.1f}x wall, {r['cpu']:.1f}x CPU time")
    res["rss_over_file"] = round(g_rss / mib, 3)
    print(
        f"groundset peak RSS / file size: {g_rss / mib:.2f}x "
        f"(goal < 3x: {'met' if g_rss < 3 * mib else 'NOT met'})"
    )
    print(f"-> {write_json(f'ingest-{args.boxes}.json', res)}")


if __name__ == "__main__":
    main()
