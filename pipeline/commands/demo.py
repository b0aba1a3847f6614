"""``groundset demo``: render the embedded offline demo world."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import Overwrite
from pipeline.core import defaults

Opt = typer.Option


def demo(
    out: Annotated[Path, Opt("--out", help="Directory to write the demo world into.")],
    n_natural: Annotated[
        int, Opt(help="Images of the COCO-format part with natural layouts.")
    ] = defaults.DEMO_N_NATURAL,
    n_unlabelled: Annotated[
        int, Opt(help="Images of the unlabelled folder (detector path).")
    ] = defaults.DEMO_N_UNLABELLED,
    n_grid: Annotated[
        int, Opt(help="Images of the grid-like COCO-format part (lattices and mosaics).")
    ] = defaults.DEMO_N_GRID,
    n_heldout: Annotated[
        int, Opt(help="Held-out natural layouts for evaluation (COCO format).")
    ] = defaults.DEMO_N_HELDOUT,
    size: Annotated[int, Opt(help="Image side in pixels (square images).")] = defaults.DEMO_SIZE,
    seed: Annotated[
        int, Opt(help="Random seed; the same seed and sizes give byte-identical files.")
    ] = defaults.DEMO_SEED,
    overwrite: Overwrite = False,
) -> None:
    """Render the offline demo world: coloured shapes with exact boxes and captions.

    Writes natural/ and grid/ (COCO 2017 layout), unlabelled/ (images + caption sidecar,
    true boxes aside in truth/) and heldout/ (evaluation layouts).
    """
    from pipeline.stages.demo.world import make_demo

    summary = make_demo(
        out,
        n_natural=n_natural,
        n_unlabelled=n_unlabelled,
        n_grid=n_grid,
        n_heldout=n_heldout,
        size=size,
        seed=seed,
        overwrite=overwrite,
    )
    parts = ", ".join(f"{k} {v['images']}/{v['boxes']}" for k, v in summary["parts"].items())
    typer.echo(f"demo world written to {out} (images/boxes): {parts}", err=True)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
