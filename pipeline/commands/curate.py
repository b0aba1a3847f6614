"""CLI commands for the curate stage (placeholder until implemented)."""

import typer


def register(app: typer.Typer) -> None:
    pass
