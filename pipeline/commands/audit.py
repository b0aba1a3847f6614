"""CLI commands for the audit stage (placeholder until implemented)."""

import typer


def register(app: typer.Typer) -> None:
    pass
