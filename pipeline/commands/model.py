"""CLI commands for the model stage (placeholder until implemented)."""

import typer


def register(app: typer.Typer) -> None:
    pass
