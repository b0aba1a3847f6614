"""``groundset contaminate``: one arm of the harm sweep (docs/harm.md), a thin CLI over
:func:`pipeline.stages.contaminate.contaminate`."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import Overwrite

Opt = typer.Option


def contaminate_command(
    natural: Annotated[Path, typer.Argument(help="Natural dataset directory (ingest/curate).")],
    grid: Annotated[
        Path | None,
        typer.Argument(help="Grid-like dataset directory (the source under suspicion)."),
    ] = None,
    out: Annotated[Path, Opt("--out", help="Mixed dataset directory to write.")] = ...,
    share: Annotated[
        float, Opt("--share", help="Share of the images that are grid-like, in [0, 1].")
    ] = 0.0,
    size: Annotated[
        int | None,
        Opt("--size", help="Images in the mixed set (default: the natural dataset's)."),
    ] = None,
    mosaic_fraction: Annotated[
        float,
        Opt(
            "--mosaic-fraction",
            help="Share of the grid-like images composed here as mosaics of natural "
            "images (mosaic augmentation, real seams); the rest come from GRID.",
        ),
    ] = 0.5,
    mosaic_tiles: Annotated[
        str, Opt("--mosaic-tiles", help="Tiles per side a mosaic may have, comma-separated.")
    ] = "2,3",
    seed: Annotated[int, Opt("--seed", help="Seed of every draw; arms of one seed nest.")] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Mix grid-like images into natural data at a fixed share and size.

    Arms with the same seed and size are nested (the 25% arm's grid images are among the
    50% arm's), so a sweep over --share changes nothing but the share. The manifest's
    `mix` counts natural, grid-source and mosaic images; they add up to --size.
    """
    from pipeline.core.errors import UserError
    from pipeline.stages.contaminate import contaminate

    try:
        tiles = tuple(int(k) for k in mosaic_tiles.split(",") if k.strip())
    except ValueError:
        raise UserError(f"--mosaic-tiles must be integers like 2,3, got {mosaic_tiles!r}") from None
    manifest = contaminate(
        natural,
        grid,
        out,
        share=share,
        size=size,
        mosaic_fraction=mosaic_fraction,
        mosaic_tiles=tiles,
        seed=seed,
        overwrite=overwrite,
    )
    m = manifest["mix"]
    typer.echo(
        f"contaminate: {m['size']} images, {m['grid_like']} grid-like ({m['grid']} from the "
        f"grid source, {m['mosaic']} mosaics) + {m['natural']} natural -> {out}"
    )


def register(app: typer.Typer) -> None:
    app.command("contaminate")(contaminate_command)
