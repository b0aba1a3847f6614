"""``groundset demo-model``: the demo's fast tiny pixel-space model."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import Overwrite
from pipeline.core import defaults

Opt = typer.Option


def demo_model(
    out: Annotated[Path, Opt("--out", help="Model folder to write (replaced if it exists).")],
    seed: Annotated[int, Opt(help="Seed of the random weights.")] = defaults.SEED,
    prediction_type: Annotated[
        str, Opt(help="What the UNet predicts: sample (x0), epsilon or v_prediction.")
    ] = defaults.DEMO_PREDICTION_TYPE,
    clip_sample: Annotated[
        bool, Opt(help="Clip predicted pixels to [-1, 1] while sampling.")
    ] = True,
    overwrite: Overwrite = False,
) -> None:
    """Write the demo's tiny diffusers model: 32 px pixel space, attention at 8x8 only.

    The same folder as `init-model --tiny --pixel` with a UNet that is several times
    faster on a CPU, so the demo's base pretrain and adapters fit in minutes.
    """
    from pipeline.stages.demo_model import write_demo_model

    path = write_demo_model(
        out,
        seed=seed,
        prediction_type=prediction_type,
        clip_sample=clip_sample,
        overwrite=overwrite,
    )
    typer.echo(f"demo-model: tiny fast pixel-space model -> {path}", err=True)


def register(app: typer.Typer) -> None:
    app.command("demo-model")(demo_model)
