"""One arm of the harm sweep, summarised: what it trained on and how its outputs tile.

``groundset evaluate`` already reports, per beta, the YOLO score, the audit's grid
score of the detected objects and the image tiling score. This stage gathers those
numbers with the arm's mix counts and the audit's verdict into one ``arm.json`` (a DVC
metrics file, so ``dvc exp show`` lists every arm side by side), and adds one measure
of its own: the tiling score **at the model's resolution**.

Why a second tiling score: ``analysis.image_grid`` scores every image at 256 px and
enlarges smaller ones bilinearly. The demo's model draws 32 px images, and an 8x
bilinear enlargement spreads a one-pixel seam over eight pixels, where the seam test
(a step over 4 px, twice the steps 4-5 px beside it) no longer sees it: real 2x2 and
3x3 mosaics reduced to 32 px score 0.01 that way, natural scenes 0.00 (docs/harm.md,
calibration). Enlarged 2x instead, a seam spans two pixels and its neighbours' steps
lie outside it: the same mosaics score 0.85 (92% tiled), natural scenes 0.12 (10%).
Pixel replication (NEAREST) would separate them too, but it turns the grain of a
young model's samples into steps at every pixel edge (0.75 on untrained adapters'
smooth blobs). Images whose 4x enlargement reaches 256 px keep the calibrated path.
The score function itself is the analysis one, unchanged.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from analysis.image_grid import WORK_SIZE, tiling_scores
from pipeline.core.atomic import atomic_path, atomic_write_text
from pipeline.core.dataset import read_dataset, read_manifest
from pipeline.core.errors import UserError
from pipeline.core.images import read_rgb

TILED = 0.5  # an image counts as tiled above this score (analysis.eval_score's cut)
STRIP = 8  # sample images per beta in the arm's picture
ZOOM = 3  # pixel replication of the sample strip


def working_size(side: int) -> int:
    """The side images of ``side`` px are scored at: 2x when 4x falls short of 256 px."""
    return WORK_SIZE if 4 * side >= WORK_SIZE else 2 * side


def model_res_tiling(images: list[np.ndarray]) -> dict:
    """Mean tiling score and tiled share, scored at :func:`working_size` (bilinear)."""
    if not images:
        return {"tiling_model_res": float("nan"), "tiling_model_res_share": float("nan")}
    size = working_size(max(max(im.shape[:2]) for im in images))
    t = tiling_scores(images, size=size)["tiling"]
    return {
        "tiling_model_res": float(t.mean()),
        "tiling_model_res_share": float((t > TILED).mean()),
    }


def per_image_name(beta: str) -> str:
    """The file ``groundset evaluate`` writes a beta's per-image scores to."""
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in f"beta={float(beta):g}")


def object_counts(per_image_csv: str) -> dict:
    """Objects the detector finds per image, and the share of images holding more
    objects than their layout asked for: a model that learned lattices fills the frame
    with repeats even where it cannot draw seams."""
    rows = list(csv.DictReader(io.StringIO(per_image_csv)))
    if not rows:
        return {"objects_per_image": None, "extra_objects_share": None}
    found = np.array([float(r["n_objects"]) for r in rows])
    asked = np.array([float(r["n_requested"]) for r in rows])
    return {
        "objects_per_image": float(found.mean()),
        "extra_objects_share": float((found > asked).mean()),
    }


def sample_images(samples_dir: Path) -> list[np.ndarray]:
    ds = read_dataset(samples_dir, columns=["source", "file"])
    src, files = ds.records.column("source").to_pylist(), ds.records.column("file").to_pylist()
    return [read_rgb(ds.image_path(s, f)) for s, f in zip(src, files)]


def _strip(rows: list[list[np.ndarray]]) -> Image.Image:
    """Rows of images (one row per beta) in one picture, pixel-replicated."""
    side = max(im.shape[0] for row in rows for im in row) * ZOOM
    gap = 2
    cols = max(len(r) for r in rows)
    canvas = Image.new("RGB", (cols * (side + gap), len(rows) * (side + gap)), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            tile = Image.fromarray(im).resize((side, side), Image.Resampling.NEAREST)
            canvas.paste(tile, (c * (side + gap), r * (side + gap)))
    return canvas


def _source_counts(dataset: Path) -> dict:
    ds = read_dataset(dataset, columns=["source"])
    src = ds.records.column("source").to_pylist()
    return {s: src.count(s) for s in sorted(set(src))}


def harm_score(
    eval_dir: str | Path,
    mix: str | Path,
    trained_on: str | Path,
    out: str | Path,
    *,
    audit: str | Path | None = None,
    strip: str | Path | None = None,
) -> dict:
    """Write ``out`` (arm.json) and, with ``strip``, a PNG of sample images per beta."""
    eval_dir, out = Path(eval_dir), Path(out)
    try:
        metrics = json.loads((eval_dir / "metrics.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{eval_dir}: no readable metrics.json ({e})") from None
    mix_manifest = read_manifest(mix)
    if "mix" not in mix_manifest:
        raise UserError(f"{mix} is not a groundset contaminate output (no 'mix' in its manifest)")
    betas, rows = {}, []
    for key in sorted(metrics.get("sweep", {}), key=float):
        run = metrics["runs"][f"beta={float(key):g}"]
        images = sample_images(eval_dir / "samples" / f"beta-{float(key):g}")
        betas[key] = {
            "ap50": run.get("ap50"),
            "grid_score": run.get("grid_score"),
            "grid_share": run.get("grid_share"),
            "grid_judged_images": run.get("grid_judged_images"),  # of n_layouts
            "tiling_score": run.get("tiling_score"),
            "tiling_share": run.get("tiling_share"),
            **model_res_tiling(images),
            **object_counts((eval_dir / "per_image" / f"{per_image_name(key)}.csv").read_text()),
        }
        rows.append(images[:STRIP])
    if not betas:
        raise UserError(f"{eval_dir}: the evaluation holds no beta sweep (was --model given?)")
    arm = {
        "share": mix_manifest["mix"]["share"],
        "mix": mix_manifest["mix"],
        "trained_on": {"path": str(trained_on), "sources": _source_counts(Path(trained_on))},
        # the cure arm trains on the audit's remediated copy of its mix, not on the mix
        "remediated": Path(trained_on).resolve() != Path(mix).resolve(),
        "n_layouts": metrics.get("n_layouts"),
        "betas": betas,
    }
    if audit is not None:
        summary = json.loads((Path(audit) / "summary.json").read_text())
        arm["audit"] = {
            k: summary.get(k)
            for k in ("verdict", "final_verdict", "grid_like_share", "images_removed")
        }
    atomic_write_text(out, json.dumps(arm, indent=2, sort_keys=True) + "\n")
    if strip is not None:
        with atomic_path(strip) as tmp:
            _strip(rows).save(tmp, format="PNG")
    return arm
