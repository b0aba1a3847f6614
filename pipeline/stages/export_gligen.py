"""The export-gligen stage: base model + adapters as a folder diffusers' GLIGEN pipeline opens."""

from __future__ import annotations

from pathlib import Path


def export_gligen(
    model: str | Path, adapters: str | Path | None, out: str | Path, *, scheduler: str
) -> Path:
    from trainer.gligen_folder import write_gligen_folder

    return write_gligen_folder(model, adapters, out, scheduler=scheduler)
