"""``groundset evaluate``: a thin CLI over :func:`pipeline.stages.evaluate.evaluate`."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import Device, Overwrite, Refiner, RefinerStart
from pipeline.core import defaults
from pipeline.core.errors import UserError

Opt = typer.Option
NONE_WORDS = ("none", "zero", "untrained")


def parse_betas(text: str) -> list[float]:
    try:
        betas = [float(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--betas must be comma-separated numbers, got {text!r}") from None
    if not betas:
        raise UserError("--betas is empty")
    return betas


def evaluate_command(
    layouts: Annotated[
        Path,
        Opt("--layouts", help="Dataset directory of held-out layouts (records with boxes)."),
    ],
    weights: Annotated[
        str,
        Opt(
            "--detector",
            "--weights",
            help="Detector weights, a local path (.pt, *_openvino_model/, ...) or an "
            "ultralytics model .yaml (random weights: plumbing tests only).",
        ),
    ],
    out: Annotated[Path, Opt("--out", help="Folder for metrics.json, plots/, report.html.")],
    model: Annotated[
        Path | None,
        Opt("--model", help="diffusers model folder to draw with (omit with --real only)."),
    ] = None,
    adapters: Annotated[
        str | None,
        Opt(
            "--adapters",
            help="Trained adapters (.safetensors), or 'none' for untrained adapters with "
            "closed gates (the base model: the baseline).",
        ),
    ] = None,
    betas: Annotated[
        str,
        Opt("--betas", help="Scheduled-sampling betas to sweep (share of steps grounded)."),
    ] = ",".join(f"{b:g}" for b in defaults.EVAL_BETAS),
    baseline: Annotated[
        bool,
        Opt(
            "--baseline/--no-baseline",
            help="Also draw the layouts with untrained adapters (gates closed) as a reference.",
        ),
    ] = False,
    real: Annotated[
        bool,
        Opt("--real", help="Also score the real images of --layouts against their own boxes."),
    ] = False,
    limit: Annotated[
        int | None, Opt("--limit", help="Evaluate only the first N layouts.", min=1)
    ] = None,
    split: Annotated[
        str,
        Opt("--split", help="Split of --layouts to draw ('' for all; 'val' falls back to all)."),
    ] = defaults.EVAL_SPLIT,
    steps: Annotated[
        int, Opt("--steps", help="Denoising steps per image.", min=1)
    ] = defaults.NUM_INFERENCE_STEPS,
    guidance_scale: Annotated[
        float, Opt("--guidance-scale", help="Classifier-free guidance scale.")
    ] = defaults.GUIDANCE_SCALE,
    seed: Annotated[int, Opt("--seed", help="Seed of each image's initial noise.")] = defaults.SEED,
    conf: Annotated[
        float,
        Opt("--conf", help="Detector confidence floor for the YOLO score (yolo val's 0.001)."),
    ] = defaults.EVAL_CONF,
    layout_conf: Annotated[
        float,
        Opt("--layout-conf", help="Confidence above which detections count for the grid score."),
    ] = defaults.EVAL_LAYOUT_CONF,
    iou: Annotated[float, Opt("--iou", help="Detector NMS IoU.")] = defaults.IOU,
    imgsz: Annotated[int, Opt("--imgsz", help="Detector input size.")] = defaults.IMGSZ,
    batch_size: Annotated[
        int, Opt("--batch-size", help="Images per generation/detection batch.", min=1)
    ] = defaults.EVAL_BATCH_SIZE,
    samples: Annotated[
        int, Opt("--samples", help="Images per run shown in report.html.", min=0)
    ] = defaults.EVAL_REPORT_SAMPLES,
    inception: Annotated[
        Path | None,
        Opt("--inception", help="Local Inception-v3 state dict; enables FID (else skipped)."),
    ] = None,
    refiner: Refiner = None,
    refiner_start: RefinerStart = defaults.REFINER_START,
    device: Device = defaults.DEVICE,
    overwrite: Overwrite = False,
) -> None:
    """Score generated images with the YOLO score and the grid effect, swept over beta.

    For each beta the held-out layouts are drawn with the adapters and a detector is run on the pictures. Detections are scored against the requested boxes (COCO AP, AP50, AP75) and for grid effect (the audit's grid score of the detected objects, and an image-space tiling score).

    Writes metrics.json, plots/beta_sweep.csv (+ .png) and a self-contained report.html.
    """
    from pipeline.stages.evaluate import evaluate_with_yolo, summary_lines

    beta_list = parse_betas(betas)
    if adapters is not None and adapters.strip().lower() in NONE_WORDS:
        adapters_path = None
    elif adapters is not None:
        adapters_path = Path(adapters)
        if not adapters_path.is_file():
            raise UserError(f"--adapters {adapters} not found (train them with groundset train)")
    else:
        adapters_path = None
        if model is not None:
            raise UserError(
                "--adapters is required with --model (a file, or 'none' for closed gates)"
            )
    metrics = evaluate_with_yolo(
        layouts,
        out,
        weights,
        conf=conf,
        iou=iou,
        imgsz=imgsz,
        device=device,
        model=model,
        adapters=adapters_path,
        betas=beta_list,
        real=real,
        baseline=baseline,
        steps=steps,
        guidance_scale=guidance_scale,
        seed=seed,
        limit=limit,
        split=split or None,
        batch_size=batch_size,
        layout_conf=layout_conf,
        report_samples=samples,
        inception=inception,
        refiner=refiner,
        refiner_start=refiner_start,
        overwrite=overwrite,
    )
    for line in summary_lines(metrics):
        typer.echo(line)
    typer.echo(f"evaluate: wrote {out}/metrics.json, {out}/plots/, {out}/report.html")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
