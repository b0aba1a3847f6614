"""``groundset check-params``: validate a params file before a DVC run does any work."""

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def check_params(
    params_file: Annotated[
        Path, typer.Argument(help="Params file to validate against pipeline/core/params.py.")
    ] = Path("params.yaml"),
    *,
    out: Annotated[Path, Opt("--out", help="Marker file written only when the params are valid.")],
) -> None:
    """Validate a params file (schema and value ranges); exit 2 naming the first misfit."""
    from pipeline.stages.check_params import check_params as run

    run(params_file, out)
    typer.echo(f"check-params: {params_file} is valid -> {out}", err=True)


def register(app: typer.Typer) -> None:
    app.command("check-params")(check_params)
