"""CLI commands, one module per command, named as the CLI names it; each exposes ``register(app)``."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.device import HELP as DEVICE_HELP

# Every command that writes an output takes this option, with this meaning.
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace --out even when it is not an earlier output of this command "
        "(inputs are never overwritten).",
    ),
]

# Every command that runs a model takes this option; pipeline.core.device resolves it.
Device = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]

# sample and evaluate hand the last steps to an SDXL refiner the same way.
Refiner = Annotated[
    Path | None,
    typer.Option(
        "--refiner",
        help="Local SDXL refiner folder: denoises the last steps, without adapters "
        "(diffusers' ensemble of experts).",
    ),
]
RefinerStart = Annotated[
    float,
    typer.Option(
        "--refiner-start", help="Share of the schedule after which the refiner takes over."
    ),
]


def parts_scheduler(detail: str = ""):
    """``--scheduler`` of the stages that work records part by part (audit, curate,
    export; ``pipeline.stages.parts.map_parts``): one meaning, ``detail`` says what the
    tasks do in that command."""
    return Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="dask scheduler for large data: threads, processes or an address like "
            f"tcp://host:8786 (one task per records part{detail}). Default: in-process.",
        ),
    ]
