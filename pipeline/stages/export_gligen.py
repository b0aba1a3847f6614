"""The export-gligen stage: base model + adapters as a folder diffusers' GLIGEN pipeline opens."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.outputs import claim_output


def export_gligen(
    model: str | Path,
    adapters: str | Path | None,
    out: str | Path,
    *,
    scheduler: str,
    overwrite: bool = False,
) -> Path:
    from trainer.gligen_folder import KIND, write_gligen_folder

    with claim_output(out, kind=KIND, inputs=[model, adapters], overwrite=overwrite):
        return write_gligen_folder(model, adapters, out, scheduler=scheduler)
