"""``groundset export-gligen``: base model + adapters as a diffusers GLIGEN pipeline folder."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import Overwrite
from pipeline.core import defaults
from pipeline.core.errors import UserError

Opt = typer.Option


def export_gligen_command(
    model: Annotated[
        Path, Opt("--model", help="Local diffusers SD1.x or SDXL model folder (the base).")
    ],
    out: Annotated[Path, Opt("--out", help="Pipeline folder to write (replaced if it exists).")],
    adapters: Annotated[
        Path | None,
        Opt("--adapters", help="Adapter .safetensors from `groundset train` (none: gates closed)."),
    ] = None,
    scheduler: Annotated[
        str, Opt("--sampler", "--scheduler", help="Sampler saved with the pipeline: ddim or dpm.")
    ] = defaults.SAMPLER,
    overwrite: Overwrite = False,
) -> None:
    """Merge base model + adapters into a folder diffusers' StableDiffusionGLIGENPipeline opens.

    An SDXL base gives a StableDiffusionXLPipeline folder with the gated UNet; its README.md
    holds the few lines of diffusers code that feed it boxes and phrases.
    """
    if scheduler not in defaults.SAMPLERS:
        raise UserError(
            f"--sampler must be one of {', '.join(defaults.SAMPLERS)}, got {scheduler!r}"
        )
    from pipeline.stages.export_gligen import export_gligen

    path = export_gligen(model, adapters, out, scheduler=scheduler, overwrite=overwrite)
    typer.echo(f"export-gligen: GLIGEN pipeline folder -> {path}")


def register(app: typer.Typer) -> None:
    app.command("export-gligen")(export_gligen_command)
