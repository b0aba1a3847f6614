"""``groundset harm-plots``: the harm sweep's figures and table (docs/harm.md), a thin CLI
over :func:`pipeline.stages.harm_plots.harm_plots`."""

from pathlib import Path
from typing import Annotated

import typer


def harm_plots_command(
    arms: Annotated[
        list[Path] | None,
        typer.Argument(help="arm.json files of the sweep's arms (or folders holding one)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the figures and table.md.")] = ...,
    exp: Annotated[
        list[str] | None,
        typer.Option("--exp", help="A DVC experiment (arm) to read from the cache; repeat."),
    ] = None,
    repo: Annotated[
        Path, typer.Option("--repo", help="The DVC repository holding the experiments.")
    ] = Path("."),
    keep: Annotated[
        Path | None,
        typer.Option("--keep", help="Copy each --exp's arm.json and samples.png here."),
    ] = None,
) -> None:
    """Tiling against contamination share (a line per beta), the beta trade-off of the
    most contaminated arm, the table of every arm and beta, and the sample strips."""
    from pipeline.stages.harm_plots import harm_plots

    done = harm_plots(arms or [], out, experiments=exp or [], repo=repo, keep=keep)
    typer.echo(
        f"harm-plots: {len(done['arms'])} arms, trade-off on {done['tradeoff_arm']} -> {out}"
    )


def register(app: typer.Typer) -> None:
    app.command("harm-plots")(harm_plots_command)
