"""The init-model stage: a tiny, complete diffusers model folder, made offline.

Real weights are never made or downloaded here; they come as a local folder.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.core.outputs import claim_output


def init_model(
    out: str | Path, *, tiny: bool, pixel: bool, seed: int, overwrite: bool = False
) -> Path:
    if not tiny:
        raise UserError(
            "only --tiny models are made locally; for real weights download a diffusers SD1.x "
            "folder (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5) and pass it as --model"
        )
    from trainer.tiny import MODEL, write_tiny

    with claim_output(out, kind=MODEL, overwrite=overwrite):
        return write_tiny(out, seed=seed, pixel=pixel)
