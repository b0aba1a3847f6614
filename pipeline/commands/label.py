"""``groundset label``: a thin CLI over :func:`pipeline.stages.label.run.label`."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import Device, Overwrite
from pipeline.core import defaults

Opt = typer.Option


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip()) if value else ()


def label_command(
    images: Annotated[
        Path, Opt("--images", help="Folder of unlabelled images (walked recursively).")
    ],
    weights: Annotated[
        str,
        Opt(
            "--detector",
            "--weights",
            help="Local ultralytics weights: .pt, .onnx, an *_openvino_model folder, "
            "or a model .yaml (random weights, for tests). Never downloaded.",
        ),
    ],
    out: Annotated[Path, Opt("--out", help="Dataset directory to write.")],
    captions: Annotated[
        Path | None,
        Opt(
            "--captions",
            help="Sidecar JSONL or CSV with 'file' and 'caption'; images it does "
            "not name get a caption composed from their boxes ('a person and two cars').",
        ),
    ] = None,
    source: Annotated[
        str | None, Opt("--source", help="Source name in image ids [default: the folder's name].")
    ] = None,
    conf: Annotated[float, Opt("--conf", help="Minimum detector score kept.")] = defaults.CONF,
    iou: Annotated[float, Opt("--iou", help="NMS IoU threshold.")] = defaults.IOU,
    max_det: Annotated[int, Opt("--max-det", help="Most boxes kept per image.")] = defaults.MAX_DET,
    imgsz: Annotated[int, Opt("--imgsz", help="Inference size in pixels.")] = defaults.IMGSZ,
    classes: Annotated[
        str | None, Opt("--classes", help="Comma-separated class names (or ids) to keep.")
    ] = None,
    phrase_map: Annotated[
        Path | None,
        Opt("--phrase-map", help="YAML/JSON 'class: phrase' map (e.g. 'tv: a television')."),
    ] = None,
    vocabulary: Annotated[
        str | None,
        Opt(
            "--vocabulary",
            help="Comma-separated prompts for YOLO-World weights ('red car,dog'). "
            "Needs ultralytics' CLIP text model installed locally.",
        ),
    ] = None,
    batch: Annotated[
        int, Opt("--batch-size", "--batch", help="Images per detector call.")
    ] = defaults.LABEL_BATCH,
    device: Device = defaults.DEVICE,
    workers: Annotated[
        int,
        Opt("--workers", help="Local processes (1: in this process; N>1: a dask LocalCluster)."),
    ] = defaults.LABEL_WORKERS,
    scheduler: Annotated[
        str | None,
        Opt("--scheduler", help="Address of an existing dask scheduler (tcp://host:port)."),
    ] = None,
    shard_size: Annotated[
        int, Opt("--shard-size", help="Images per resumable shard.")
    ] = defaults.LABEL_SHARD_SIZE,
    threads: Annotated[
        int | None,
        Opt(
            "--threads",
            help="Inference threads per worker [default: ultralytics' choice "
            "in-process; cores / N with --workers N].",
            min=1,
        ),
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Pseudo-label a folder of images with an ultralytics YOLO detector.

    Writes a dataset directory whose boxes carry phrase, category, detector score and
    origin '<model>@<weights sha256[:12]>'. Unreadable, truncated, non-image and oversized
    files are rejected with a reason. Killed runs resume from <out>.work/ when rerun.
    Defaults are ultralytics predict's (conf 0.25, iou 0.7, max_det 300, imgsz 640).
    """
    if workers > 1 and scheduler:
        raise typer.BadParameter("give --workers or --scheduler, not both")
    from pipeline.stages.label.run import label

    manifest = label(
        images,
        out,
        weights,
        captions=captions,
        source=source,
        conf=conf,
        iou=iou,
        max_det=max_det,
        imgsz=imgsz,
        classes=_split(classes),
        phrase_map=phrase_map,
        vocabulary=_split(vocabulary),
        batch=batch,
        device=device,
        workers=workers,
        scheduler=scheduler,
        shard_size=shard_size,
        threads=threads,
        overwrite=overwrite,
    )
    c = manifest["counts"]
    typer.echo(
        f"label: {c['images_kept']}/{c['images_in']} images, {c['boxes_kept']} boxes "
        f"({manifest['detector']['origin']}) -> {out}"
    )


def register(app: typer.Typer) -> None:
    app.command("label")(label_command)
