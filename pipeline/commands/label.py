"""CLI commands for the label stage (placeholder until implemented)."""

import typer


def register(app: typer.Typer) -> None:
    pass
