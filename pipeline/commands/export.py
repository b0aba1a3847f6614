"""``groundset export``: a thin CLI over :func:`pipeline.stages.export.export`."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import Overwrite, parts_scheduler
from pipeline.core.errors import UserError

FORMAT_HELP = (
    "coco (OUT/instances.json + OUT/captions.json), yolo (ultralytics dataset folder with "
    "data.yaml) or gligen-tsv (GLIGEN's TSV file + .lineidx)."
)


def export_command(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help=FORMAT_HELP)],
    dataset: Annotated[Path, typer.Argument(help="Dataset directory to export.")],
    out: Annotated[
        Path, typer.Option("--out", help="Output folder (coco, yolo) or .tsv file (gligen-tsv).")
    ],
    text_encoder: Annotated[
        Path | None,
        typer.Option(
            "--text-encoder",
            help="gligen-tsv only: local CLIP text model folder (transformers format, or a "
            "Stable Diffusion folder with text_encoder/ and tokenizer/). Without it the TSV "
            "carries no text embeddings.",
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="gligen-tsv only: train (default; GLIGEN trains on every line of its TSV), "
            "val (curate's held-out images) or all. Images curate did not mark val are train.",
        ),
    ] = None,
    scheduler: parts_scheduler(
        ", each pass; the same output as in-process. yolo's tasks write label files and "
        "links into the output, gligen-tsv's write spill files beside it, so a cluster's "
        "workers must share this filesystem, as they do to read the dataset and images"
    ) = None,
    overwrite: Overwrite = False,
) -> None:
    """Export a dataset as COCO JSON, an ultralytics YOLO dataset, or GLIGEN's TSV."""
    from pipeline.core.arrow_env import skip_pandas_probe, use_jemalloc

    use_jemalloc()  # before pyarrow is imported: freed memory goes back between parts
    from pipeline.stages.export import FORMATS, export

    skip_pandas_probe()  # no pandas data here: save pyarrow's import of it (0.3-0.5 s)

    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if text_encoder is not None and fmt != "gligen-tsv":
        raise UserError("--text-encoder only applies to gligen-tsv")
    path = export(
        fmt,
        dataset,
        out,
        text_encoder=text_encoder,
        split=split,
        scheduler=scheduler,
        overwrite=overwrite,
    )
    typer.echo(f"export {fmt}: wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
