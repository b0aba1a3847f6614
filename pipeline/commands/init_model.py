"""``groundset init-model``: write a tiny, complete diffusers model folder offline."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import Overwrite
from pipeline.core import defaults

Opt = typer.Option


def init_model_command(
    out: Annotated[Path, Opt("--out", help="Model folder to write (replaced if it exists).")],
    tiny: Annotated[
        bool,
        Opt("--tiny", help="Write a tiny random SD1.x-style model (the only kind made locally)."),
    ] = False,
    pixel: Annotated[
        bool,
        Opt("--pixel", help="Leave the VAE out: the UNet denoises 32 px RGB images directly."),
    ] = False,
    seed: Annotated[int, Opt("--seed", help="Seed of the random weights.")] = defaults.SEED,
    overwrite: Overwrite = False,
) -> None:
    """Write a complete diffusers model folder for tests and demos, offline.

    Real weights are never made or downloaded here: pass a downloaded Stable Diffusion 1.x
    folder to --model instead.
    """
    from pipeline.stages.init_model import init_model

    path = init_model(out, tiny=tiny, pixel=pixel, seed=seed, overwrite=overwrite)
    typer.echo(f"init-model: tiny {'pixel' if pixel else 'latent'} model -> {path}")


def register(app: typer.Typer) -> None:
    app.command("init-model")(init_model_command)
