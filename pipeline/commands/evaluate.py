"""CLI commands for the evaluate stage (placeholder until implemented)."""

import typer


def register(app: typer.Typer) -> None:
    pass
