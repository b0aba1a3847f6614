"""CLI commands for the demo stage (placeholder until implemented)."""

import typer


def register(app: typer.Typer) -> None:
    pass
