"""``groundset curate``: a thin CLI over :func:`pipeline.curate.curate`."""

from pathlib import Path

import typer

from pipeline import defaults


def curate_command(
    inputs: list[Path] = typer.Argument(
        ..., help="Dataset directories to merge (outputs of ingest, label or an earlier curate)."
    ),
    out: Path = typer.Option(..., "--out", help="Curated dataset directory to write."),
    min_box_area: float = typer.Option(
        defaults.MIN_BOX_AREA,
        "--min-box-area",
        help="Drop boxes smaller than this fraction of the image area (GLIGEN: 0.01).",
    ),
    max_boxes: int = typer.Option(
        defaults.MAX_BOXES,
        "--max-boxes",
        help="Keep only this many largest boxes per image (GLIGEN: 30).",
    ),
    val_fraction: float = typer.Option(
        defaults.VAL_FRACTION,
        "--val-fraction",
        help="Share of images assigned to the val split (by a hash of image_id).",
    ),
    seed: int = typer.Option(
        defaults.SPLIT_SEED, "--seed", help="Key of the split hash; change it for another split."
    ),
    no_hash: bool = typer.Option(
        False,
        "--no-hash",
        help="Find duplicate images by source + file only, without reading image files.",
    ),
) -> None:
    """Merge datasets, drop duplicate images, apply GLIGEN's box filters, split train/val.

    Every dropped image and box is written to rejects.parquet with its reason, and the
    manifest's counts add up exactly.
    """
    from pipeline.curate import curate

    manifest = curate(
        inputs, out, min_box_area=min_box_area, max_boxes=max_boxes,
        val_fraction=val_fraction, seed=seed, hash_images=not no_hash,
    )
    c = manifest["counts"]
    typer.echo(
        f"curate: {c['images_kept']}/{c['images_in']} images, {c['boxes_kept']}/{c['boxes_in']} "
        f"boxes kept, splits {manifest.get('splits', {})} -> {out}"
    )


def register(app: typer.Typer) -> None:
    app.command("curate")(curate_command)
