"""CLI commands for the train stage (placeholder until implemented)."""

import typer


def register(app: typer.Typer) -> None:
    pass
