"""CLI commands for the detector stage (placeholder until implemented)."""

import typer


def register(app: typer.Typer) -> None:
    pass
