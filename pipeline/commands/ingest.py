"""CLI commands for the ingest stage (placeholder until implemented)."""

import typer


def register(app: typer.Typer) -> None:
    pass
