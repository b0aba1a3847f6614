"""CLI commands for the ingest stage: ``groundset ingest coco`` and ``groundset ingest yolo``.

Thin wrappers: option parsing and a one-line summary. The work happens in
``pipeline.stages.ingest.coco.ingest_coco`` and ``pipeline.stages.ingest.yolo.ingest_yolo``, which
Python callers and DVC stages can use directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import Overwrite

ingest_app = typer.Typer(
    help="Turn COCO or YOLO annotations into a groundset dataset directory "
    "(records/, rejects.parquet, manifest.json).",
    no_args_is_help=True,
)


def _summary(out: Path, manifest: dict) -> None:
    c = manifest["counts"]
    typer.echo(
        f"{out}: {c['images_kept']}/{c['images_in']} images, {c['boxes_kept']}/{c['boxes_in']} "
        f"boxes kept; rejected images {c['images_rejected'] or 0}, boxes {c['boxes_rejected'] or 0}"
    )


@ingest_app.command("coco")
def coco(
    instances: Annotated[
        Path, typer.Option("--instances", help="COCO instances JSON (e.g. instances_val2017.json).")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Dataset directory to write (replaced atomically).")
    ],
    captions: Annotated[
        Path | None,
        typer.Option(
            "--captions",
            help="COCO captions JSON (e.g. captions_val2017.json); captions are joined by image id.",
        ),
    ] = None,
    images_root: Annotated[
        Path | None,
        typer.Option(
            "--images-root",
            help="Folder the file_name entries are relative to; stored in the manifest.",
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="Source name that qualifies image ids ('<source>:<coco id>'). Default: the instances "
            "file stem, with 'instances_' turned into 'coco-' (instances_val2017.json -> coco-val2017).",
        ),
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Ingest a COCO instances file: boxes become normalised xyxy, phrase = category name."""
    from pipeline.stages.ingest.coco import ingest_coco

    _summary(
        out,
        ingest_coco(
            instances,
            out,
            captions=captions,
            images_root=images_root,
            source=source,
            overwrite=overwrite,
        ),
    )


@ingest_app.command("yolo")
def yolo(
    images: Annotated[
        Path, typer.Option("--images", help="Folder of images (searched recursively).")
    ],
    labels: Annotated[
        Path,
        typer.Option(
            "--labels",
            help="Folder of YOLO .txt labels mirroring --images ('class cx cy w h', normalised).",
        ),
    ],
    names: Annotated[
        Path,
        typer.Option(
            "--names", help="Ultralytics data.yaml whose 'names' maps class ids to names."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Dataset directory to write (replaced atomically).")
    ],
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="Source name that qualifies image ids ('<source>:<relative path without suffix>'). "
            "Default: the --images folder name, or its parent's name when it is called 'images'.",
        ),
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Ingest a YOLO/ultralytics label layout; image sizes come from headers only."""
    from pipeline.stages.ingest.yolo import ingest_yolo

    _summary(out, ingest_yolo(images, labels, names, out, source=source, overwrite=overwrite))


def register(app: typer.Typer) -> None:
    app.add_typer(ingest_app, name="ingest")
