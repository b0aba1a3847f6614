"""``groundset audit-plots``: an audit's grid scores binned for ``dvc plots``."""

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def audit_plots(
    audit_dir: Annotated[Path, typer.Argument(help="Output directory of `groundset audit`.")],
) -> None:
    """Bin an audit's grid scores per source into CSVs for `dvc plots show` (DIR/plots/)."""
    from pipeline.stages.audit_plots import write_audit_plots

    out = write_audit_plots(audit_dir)
    typer.echo(f"audit-plots: grid_score histograms per source -> {out}", err=True)


def register(app: typer.Typer) -> None:
    app.command("audit-plots")(audit_plots)
