"""The init-model stage: a tiny, complete diffusers model folder, made offline.

Real weights are never made or downloaded here; they come as a local folder.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.core.outputs import claim_output

ARCHS = ("sd1", "sdxl", "sdxl-refiner")  # trainer.arch.ARCHS, named here for the CLI's check


def init_model(
    out: str | Path,
    *,
    tiny: bool,
    pixel: bool,
    seed: int,
    arch: str = "sd1",
    overwrite: bool = False,
) -> Path:
    if not tiny:
        raise UserError(
            "only --tiny models are made locally; for real weights download a diffusers SD1.x "
            "or SDXL folder (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5, "
            "stabilityai/stable-diffusion-xl-base-1.0) and pass it as --model"
        )
    if arch not in ARCHS:
        raise UserError(f"--arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if pixel and arch != "sd1":
        raise UserError("--pixel makes an SD1.x model only; leave it out with --arch " + arch)
    from trainer.tiny import MODEL, write_tiny

    with claim_output(out, kind=MODEL, overwrite=overwrite):
        return write_tiny(out, seed=seed, pixel=pixel, arch=arch)
