"""``groundset detector train``: a thin CLI over :func:`pipeline.stages.detector_train.train_detector`."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import Device, Overwrite
from pipeline.core import defaults

Opt = typer.Option
detector_app = typer.Typer(
    help="Train or adapt the detector used by `groundset label`.", no_args_is_help=True
)


@detector_app.command("train")
def train_command(
    data: Annotated[Path, Opt("--data", help="Labelled groundset dataset directory to train on.")],
    out: Annotated[
        Path, Opt("--out", help="Folder for best.pt, last.pt, results.csv, manifest.json.")
    ],
    weights: Annotated[
        str,
        Opt(
            "--detector",
            "--weights",
            help="Start point: a local .pt to fine-tune, or a model .yaml that "
            "ultralytics ships (yolov8n.yaml) to train from scratch. Never downloaded.",
        ),
    ] = defaults.DETECTOR_WEIGHTS,
    epochs: Annotated[int, Opt("--epochs", help="Training epochs.")] = defaults.DETECTOR_EPOCHS,
    imgsz: Annotated[int, Opt("--imgsz", help="Training image size.")] = defaults.IMGSZ,
    batch: Annotated[
        int, Opt("--batch-size", "--batch", help="Images per batch.")
    ] = defaults.DETECTOR_BATCH,
    device: Device = defaults.DEVICE,
    seed: Annotated[
        int, Opt("--seed", help="Training seed (ultralytics deterministic mode).")
    ] = defaults.SEED,
    workers: Annotated[
        int, Opt("--workers", help="Dataloader worker processes.")
    ] = defaults.DETECTOR_WORKERS,
    overwrite: Overwrite = False,
) -> None:
    """Export DATA to YOLO format and fine-tune (or train) an ultralytics YOLO on it, offline.

    Images marked val by `groundset curate` validate; without them train doubles as val.
    Writes OUT/best.pt for `groundset label --weights OUT/best.pt`.
    """
    from pipeline.stages.detector_train import train_detector

    m = train_detector(
        data,
        out,
        weights=weights,
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        device=device,
        seed=seed,
        workers=workers,
        overwrite=overwrite,
    )
    map50 = m["metrics"].get("metrics/mAP50(B)")
    typer.echo(
        f"detector train: {len(m['class_names'])} classes, mAP50 "
        f"{map50 if map50 is None else round(map50, 3)} -> {out / 'best.pt'}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(detector_app, name="detector")
