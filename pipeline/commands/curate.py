"""``groundset curate``: a thin CLI over :func:`pipeline.stages.curate.curate`."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import Overwrite, parts_scheduler
from pipeline.core import defaults

Opt = typer.Option


def curate_command(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Dataset directories to merge (outputs of ingest, label or an earlier curate)."
        ),
    ],
    out: Annotated[Path, Opt("--out", help="Curated dataset directory to write.")],
    min_box_area: Annotated[
        float,
        Opt("--min-box-area", help="Drop boxes smaller than this fraction of the image area."),
    ] = defaults.MIN_BOX_AREA,
    max_boxes: Annotated[
        int, Opt("--max-boxes", help="Keep only this many largest boxes per image.")
    ] = defaults.MAX_BOXES,
    val_fraction: Annotated[
        float,
        Opt("--val-fraction", help="Share of images put in the val split (hash of image_id)."),
    ] = defaults.VAL_FRACTION,
    seed: Annotated[
        int, Opt("--seed", help="Key of the split hash; another seed gives another split.")
    ] = defaults.SPLIT_SEED,
    no_hash: Annotated[
        bool,
        Opt("--no-hash", help="Find duplicate images by source + file only (no image reads)."),
    ] = False,
    scheduler: parts_scheduler("; image hashing runs there") = None,
    overwrite: Overwrite = False,
) -> None:
    """Merge datasets, drop duplicate images, apply GLIGEN's box filters, split train/val.

    Defaults are GLIGEN's (boxes under 1% of the image dropped, 30 largest kept). Every
    dropped image and box goes to rejects.parquet with its reason; counts add up exactly.
    """
    from pipeline.core.arrow_env import skip_pandas_probe, use_jemalloc

    use_jemalloc()  # before pyarrow is imported: freed memory goes back between parts
    from pipeline.stages.curate import curate

    skip_pandas_probe()  # no pandas data here: save pyarrow's import of it (0.3-0.5 s)

    manifest = curate(
        inputs,
        out,
        min_box_area=min_box_area,
        max_boxes=max_boxes,
        val_fraction=val_fraction,
        seed=seed,
        hash_images=not no_hash,
        scheduler=scheduler,
        overwrite=overwrite,
    )
    c = manifest["counts"]
    typer.echo(
        f"curate: {c['images_kept']}/{c['images_in']} images, {c['boxes_kept']}/{c['boxes_in']} "
        f"boxes kept, splits {manifest.get('splits', {})} -> {out}"
    )


def register(app: typer.Typer) -> None:
    app.command("curate")(curate_command)
