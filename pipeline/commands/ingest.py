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


def _yolo_notes(manifest: dict) -> list[str]:
    """Per-split counts (--data form) and the .txt files that were not read as labels."""
    notes = []
    for meta in manifest["sources"].values():
        splits = meta.get("splits", [])
        if any(s["split"] for s in splits):
            notes.append(
                "splits: "
                + ", ".join(
                    f"{s['split']} {s['images_kept']} images ({s['images_dir']})" for s in splits
                )
            )
        other = [s for s in splits if s["other_txt"]]
        if other:
            n = sum(s["other_txt"] for s in other)
            eg = next(s["other_txt_examples"][0] for s in other)
            notes.append(
                f"{n} .txt file(s) pair with no image and were not read as labels (e.g. {eg})"
            )
    return notes


@ingest_app.command("yolo")
def yolo(
    out: Annotated[
        Path, typer.Option("--out", help="Dataset directory to write (replaced atomically).")
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Ultralytics/Roboflow data.yaml: reads its train/val/test image folders, the "
            "labels beside them (/images/ -> /labels/) and its names; each split is kept as the "
            "records' split. Instead of --images/--labels/--names.",
        ),
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Folder of images (searched recursively).")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="Folder of YOLO .txt labels mirroring --images ('class cx cy w h', normalised).",
        ),
    ] = None,
    names: Annotated[
        Path | None,
        typer.Option(
            "--names", help="Ultralytics data.yaml whose 'names' maps class ids to names."
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="Source name that qualifies image ids ('<source>:<relative path without suffix>'). "
            "Default: the --images folder name, or its parent's name when it is called 'images'; "
            "with --data, the dataset root's folder name.",
        ),
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Ingest a YOLO/ultralytics label layout; image sizes come from headers only."""
    from pipeline.core.errors import UserError
    from pipeline.stages.ingest.yolo import ingest_yolo, ingest_yolo_data

    given = [o for o, v in (("--images", images), ("--labels", labels), ("--names", names)) if v]
    if data is not None and given:
        raise UserError(f"give either --data or --images/--labels/--names, not both ({given[0]})")
    if data is not None:
        manifest = ingest_yolo_data(data, out, source=source, overwrite=overwrite)
    elif len(given) < 3:
        missing = [o for o in ("--images", "--labels", "--names") if o not in given]
        raise UserError(f"missing {', '.join(missing)} (or give --data data.yaml)")
    else:
        manifest = ingest_yolo(images, labels, names, out, source=source, overwrite=overwrite)
    _summary(out, manifest)
    for note in _yolo_notes(manifest):
        typer.echo(f"  {note}")


def register(app: typer.Typer) -> None:
    app.add_typer(ingest_app, name="ingest")
