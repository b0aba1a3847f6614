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
        Opt("--tiny", help="Write a tiny random model (the only kind made locally)."),
    ] = False,
    pixel: Annotated[
        bool,
        Opt("--pixel", help="Leave the VAE out: the UNet denoises 32 px RGB images directly."),
    ] = False,
    arch: Annotated[
        str,
        Opt(
            "--arch",
            help="sd1, sdxl (two text encoders, size/crop micro-conditioning) or "
            "sdxl-refiner (an SDXL refiner for sample --refiner).",
        ),
    ] = "sd1",
    seed: Annotated[int, Opt("--seed", help="Seed of the random weights.")] = defaults.SEED,
    overwrite: Overwrite = False,
) -> None:
    """Write a complete diffusers model folder for tests and demos, offline.

    Real weights are never made or downloaded here: pass a downloaded Stable Diffusion 1.x
    or SDXL folder to --model instead.
    """
    from pipeline.stages.init_model import init_model

    path = init_model(out, tiny=tiny, pixel=pixel, seed=seed, arch=arch, overwrite=overwrite)
    kind = arch if arch != "sd1" else ("pixel" if pixel else "latent")
    typer.echo(f"init-model: tiny {kind} model -> {path}")


def register(app: typer.Typer) -> None:
    app.command("init-model")(init_model_command)
