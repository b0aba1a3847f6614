"""The evaluation stage: the scheduled-sampling sweep, the real-image reference, the report.

For each beta the trained adapters draw the held-out layouts (``pipeline.stages.sample``), a
detector looks at the pictures, and ``analysis.eval_score`` measures layout following
(YOLO score) and grid effect (layout grid score of the detections, image tiling score).
The same layouts drawn with *untrained* adapters (gates closed: the base model, whatever
beta is) give the baseline a trained model must beat, and the real photos of the layouts
scored against their own boxes give the ceiling ("real images" row).

Every run's samples are a dataset directory under ``out/samples``; a killed sweep rerun
with the same request reuses the images already drawn (``pipeline.stages.sample`` keys them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from analysis.eval_report import (
    clean,
    draw_boxes,
    plot_png,
    write_metrics,
    write_plot_csv,
    write_plot_png,
    write_report,
)
from analysis.eval_score import RunScore, image_paths, requested_boxes, score_dataset
from pipeline.core import defaults
from pipeline.core.atomic import atomic_write_text
from pipeline.core.dataset import Dataset, dataset_input_paths, read_dataset
from pipeline.core.device import resolve_device
from pipeline.core.errors import UserError
from pipeline.core.outputs import claim_output, make_output_dir, no_empty_output_on_failure

KIND = "evaluate"
SUMMARY = "summary.json"  # the DVC metrics file: headline numbers only
HEADLINE = ("ap50", "ap", "tiling_score", "tiling_share", "grid_share")
REAL = "real images"
UNTRAINED = "untrained adapters (gates closed)"
FID_SKIPPED = "skipped: no Inception weights given (--inception PATH)"


def headline(metrics: dict) -> dict:
    """The few numbers a person compares across runs (``dvc metrics show``): per run, the
    YOLO score and the grid effect. Everything else stays in metrics.json."""

    def key(run: str) -> str:
        return {REAL: "real", UNTRAINED: "closed_gates"}.get(run, run.replace("=", "_"))

    runs = {key(name): {k: r.get(k) for k in HEADLINE} for name, r in metrics["runs"].items()}
    return clean({"n_layouts": metrics["n_layouts"], **runs})


def beta_run(beta: float) -> str:
    return f"beta={beta:g}"


def select_layouts(ds: Dataset, split: str | None, limit: int | None) -> tuple[Dataset, str | None]:
    """The records evaluated; ``split='val'`` on a dataset without a val split means all."""
    records = ds.records
    used = split or None
    if split:
        mask = pc.equal(records.column("split"), split)
        if split == defaults.EVAL_SPLIT and not pc.any(mask).as_py():
            used = None
        else:
            records = records.filter(mask)
    if limit is not None:
        records = records.slice(0, limit)
    if records.num_rows == 0:
        raise UserError(f"{ds.path}: no layouts to evaluate (split {split!r}, limit {limit})")
    return Dataset(ds.path, records, ds.rejects, ds.manifest), used


def gallery(ds: Dataset, n: int) -> list:
    """Thumbnails of the first ``n`` images with their requested boxes drawn."""
    head = Dataset(ds.path, ds.records.slice(0, n), ds.rejects, ds.manifest)
    offsets, xyxy, labels = requested_boxes(head.records)
    ids = head.records.column("image_id").to_pylist()
    return [
        (
            draw_boxes(p, xyxy[offsets[i] : offsets[i + 1]], labels[offsets[i] : offsets[i + 1]]),
            ids[i],
        )
        for i, p in enumerate(image_paths(head))
    ]


def save_run(out: Path, name: str, score: RunScore) -> None:
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in name)
    atomic_write_text(out / "per_image" / f"{safe}.csv", score.per_image.to_csv(index=False))
    if score.unscorable:
        atomic_write_text(
            out / "per_image" / f"{safe}.unscorable.json", json.dumps(score.unscorable) + "\n"
        )


def evaluate(
    layouts: str | Path,
    out: str | Path,
    detector,
    *,
    model: str | Path | None = None,
    adapters: str | Path | None = None,
    betas=defaults.EVAL_BETAS,
    real: bool = False,
    baseline: bool = False,
    steps: int = defaults.NUM_INFERENCE_STEPS,
    guidance_scale: float = defaults.GUIDANCE_SCALE,
    seed: int = defaults.SEED,
    limit: int | None = None,
    split: str | None = defaults.EVAL_SPLIT,
    batch_size: int = defaults.EVAL_BATCH_SIZE,
    layout_conf: float = defaults.EVAL_LAYOUT_CONF,
    report_samples: int = defaults.EVAL_REPORT_SAMPLES,
    inception: str | Path | None = None,
    refiner: str | Path | None = None,
    refiner_start: float = defaults.REFINER_START,
    backend: str = "auto",
    device: str = defaults.DEVICE,
    detector_info: dict | None = None,
    overwrite: bool = False,
) -> dict:
    """Run the requested evaluations and write metrics.json, plots, report.html under ``out``."""
    out = Path(out)
    if model is None and not real:
        raise UserError("nothing to evaluate: give --model (the beta sweep) and/or --real")
    bad = [b for b in betas if not 0.0 <= float(b) <= 1.0]
    if bad:
        raise UserError(f"--betas must lie within [0, 1], got {bad}")
    with (
        claim_output(
            out,
            kind=KIND,
            inputs=[*dataset_input_paths(layouts), model, adapters, inception, refiner],
            overwrite=overwrite,
        ),
        no_empty_output_on_failure(out),
    ):
        make_output_dir(out, KIND)
        ds, used_split = select_layouts(read_dataset(layouts), split, limit)
        n = ds.records.num_rows
        runs, sweep, galleries, datasets = {}, {}, {}, {}

        def score(name: str, run_ds: Dataset) -> dict:
            s = score_dataset(
                run_ds,
                detector,
                batch_size=batch_size,
                layout_conf=layout_conf,
                backend=backend,
                desc=name,
            )
            save_run(out, name, s)
            galleries[name] = gallery(run_ds, report_samples)
            datasets[name] = run_ds
            runs[name] = s.summary
            return s.summary

        if real:
            score(REAL, ds)
        if model is not None:
            from pipeline.stages.sample import sample_dataset

            common = {
                "model": model,
                "layouts": layouts,
                "steps": steps,
                "guidance_scale": guidance_scale,
                "seed": seed,
                "limit": limit,
                "split": used_split,
                "batch_size": batch_size,
                "device": device,
            }
            if refiner is not None:  # an SDXL refiner finishes every image, trained or not
                common.update(refiner=refiner, refiner_start=refiner_start)
            for beta in sorted({float(b) for b in betas}):
                target = out / "samples" / f"beta-{beta:g}"
                sample_dataset(out=target, adapters=adapters, beta=beta, **common)
                sweep[f"{beta:g}"] = score(beta_run(beta), read_dataset(target))
            if baseline and adapters is not None:
                # Closed gates make every beta draw the same image, so one run is the baseline.
                target = out / "samples" / "untrained"
                sample_dataset(out=target, adapters=None, beta=1.0, **common)
                score(UNTRAINED, read_dataset(target))

        fid = {"status": FID_SKIPPED}
        if inception is not None:
            from analysis.fid import fid_against

            fid = fid_against(
                datasets.get(REAL, ds),
                {k: v for k, v in datasets.items() if k != REAL},
                inception,
                batch_size=batch_size,
            )

        unscorable = {}
        for r in runs.values():
            for k, v in r["unscorable_by_category"].items():
                unscorable[k] = unscorable.get(k, 0) + v
        metrics = {
            "runs": runs,
            "sweep": sweep,
            "n_layouts": n,
            "unscorable_by_category": unscorable,
            "fid": fid,
            "params": {
                "layouts": str(layouts),
                "split": used_split or "all",
                "model": None if model is None else str(model),
                "adapters": None if adapters is None else str(adapters),
                "refiner": None if refiner is None else str(refiner),
                "betas": [float(b) for b in betas] if model is not None else [],
                "steps": steps,
                "guidance_scale": guidance_scale,
                "seed": seed,
                "limit": limit,
                "layout_conf": layout_conf,
                "detector": detector_info or {},
            },
        }
        references = {k: v for k, v in runs.items() if k in (REAL, UNTRAINED)}
        write_metrics(out, metrics)
        atomic_write_text(out / SUMMARY, json.dumps(headline(metrics), indent=2) + "\n")
        write_plot_csv(out, sweep)
        plot = plot_png(sweep, references) if sweep else None
        if plot:
            write_plot_png(out, sweep, references)
        write_report(out, metrics, galleries, plot)
        return metrics


def evaluate_with_yolo(
    layouts: str | Path,
    out: str | Path,
    weights: str | Path,
    *,
    conf: float,
    iou: float,
    imgsz: int,
    device: str,
    **kwargs,
) -> dict:
    """``evaluate`` with an ultralytics detector built from local weights (the CLI's path)."""
    from detectors.base import DetectorOptions
    from detectors.ultralytics_backend import UltralyticsDetector

    others = [kwargs.get(k) for k in ("model", "adapters", "inception", "refiner")]
    with claim_output(
        out,
        kind=KIND,
        inputs=[weights, *dataset_input_paths(layouts), *others],
        overwrite=kwargs.get("overwrite", False),
    ):
        options = DetectorOptions(conf=conf, iou=iou, max_det=defaults.MAX_DET, imgsz=imgsz)
        device = resolve_device(device)
        detector = UltralyticsDetector(weights, options, device=device)
        info = {
            "weights": str(weights),
            "origin": f"{detector.name}@{detector.fingerprint[:12]}",
            **options.as_dict(),
        }
        return evaluate(layouts, out, detector, detector_info=info, device=device, **kwargs)


def summary_lines(metrics: dict) -> list[str]:
    """One line per run for the terminal."""
    lines = []
    for name, r in metrics["runs"].items():
        f = {
            k: ("n/a" if r.get(k) is None or np.isnan(r[k]) else f"{r[k]:.3f}")
            for k in ("ap", "ap50", "ap75", "grid_score", "tiling_score")
        }
        lines.append(
            f"{name}: AP {f['ap']} AP50 {f['ap50']} AP75 {f['ap75']} | grid score {f['grid_score']} "
            f"tiling {f['tiling_score']} | {r['n_images']} images, {r['n_unscorable']} unscorable boxes"
        )
    fid = metrics.get("fid", {})
    lines.append(f"FID: {fid.get('status', fid)}")
    return lines
