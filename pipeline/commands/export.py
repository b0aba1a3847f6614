"""CLI commands for the export stage (placeholder until implemented)."""

import typer


def register(app: typer.Typer) -> None:
    pass
