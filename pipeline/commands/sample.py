"""``groundset sample``: draw images for layouts with GLIGEN's scheduled sampling."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import Device, Overwrite, Refiner, RefinerStart
from pipeline.core import defaults
from pipeline.core.errors import UserError

Opt = typer.Option


def sample_command(
    model: Annotated[
        Path, Opt("--model", help="Local diffusers SD1.x, SDXL or GLIGEN model folder.")
    ],
    layouts: Annotated[
        Path, Opt("--layouts", help="Dataset directory whose records give caption + boxes.")
    ],
    out: Annotated[Path, Opt("--out", help="Dataset directory to write: images/ + layouts.")],
    adapters: Annotated[
        Path | None,
        Opt("--adapters", help="Adapter .safetensors from `groundset train` (none: gates closed)."),
    ] = None,
    beta: Annotated[
        float,
        Opt("--beta", help="Share of steps with the gated layers on (GLIGEN scheduled sampling)."),
    ] = defaults.SCHEDULED_SAMPLING_BETA,
    steps: Annotated[int, Opt("--steps", help="Denoising steps.")] = defaults.NUM_INFERENCE_STEPS,
    guidance_scale: Annotated[
        float, Opt("--guidance-scale", help="Classifier-free guidance scale (<=1 turns it off).")
    ] = defaults.GUIDANCE_SCALE,
    scheduler: Annotated[
        str, Opt("--sampler", "--scheduler", help="Sampler: ddim or dpm (DPM-Solver++ multistep).")
    ] = defaults.SAMPLER,
    seed: Annotated[
        int, Opt("--seed", help="Base seed; image i uses its own seed from it.")
    ] = defaults.SEED,
    limit: Annotated[
        int | None, Opt("--limit", help="Draw at most this many layouts (after --split).")
    ] = None,
    split: Annotated[
        str | None, Opt("--split", help="Use only records of this split (e.g. val).")
    ] = None,
    batch_size: Annotated[
        int, Opt("--batch-size", help="Images per forward pass.")
    ] = defaults.SAMPLE_BATCH_SIZE,
    target_size: Annotated[
        tuple[int, int] | None,
        Opt(
            "--target-size",
            metavar="HEIGHT WIDTH",
            help="Image size in pixels [default: the model's own square, 1024 for SDXL].",
        ),
    ] = None,
    original_size: Annotated[
        tuple[int, int] | None,
        Opt(
            "--original-size",
            metavar="HEIGHT WIDTH",
            help="SDXL micro-conditioning: the original size to ask for [default: the target size].",
        ),
    ] = None,
    crop: Annotated[
        tuple[int, int] | None,
        Opt(
            "--crop",
            metavar="TOP LEFT",
            help="SDXL micro-conditioning: crop top-left to ask for [default: 0 0, centred objects].",
        ),
    ] = None,
    refiner: Refiner = None,
    refiner_start: RefinerStart = defaults.REFINER_START,
    device: Device = defaults.DEVICE,
    dtype: Annotated[
        str, Opt("--dtype", help="Weights dtype: float32, float16 or bfloat16.")
    ] = defaults.SAMPLE_DTYPE,
    overwrite: Overwrite = False,
) -> None:
    """Draw one image per layout with GLIGEN's scheduled sampling; write images + layouts.

    The output is a dataset directory (records = the layouts asked for, images/ = the
    pictures), so `groundset evaluate` can score generated boxes against requested ones.
    A killed run resumes: images already drawn for the same request are kept.
    """
    if scheduler not in defaults.SAMPLERS:
        raise UserError(
            f"--sampler must be one of {', '.join(defaults.SAMPLERS)}, got {scheduler!r}"
        )
    if dtype not in defaults.SAMPLE_DTYPES:
        raise UserError(
            f"--dtype must be one of {', '.join(defaults.SAMPLE_DTYPES)}, got {dtype!r}"
        )
    import torch

    from pipeline.stages.sample import sample_dataset

    manifest = sample_dataset(
        model,
        layouts,
        out,
        adapters=adapters,
        beta=beta,
        steps=steps,
        guidance_scale=guidance_scale,
        scheduler=scheduler,
        seed=seed,
        limit=limit,
        split=split,
        batch_size=batch_size,
        device=device,
        dtype=getattr(torch, dtype),
        size=target_size,
        original_size=original_size,
        crop=crop,
        refiner=refiner,
        refiner_start=refiner_start,
        overwrite=overwrite,
    )
    c = manifest["counts"]
    typer.echo(f"sample: {c['images_kept']} images, {c['boxes_kept']} boxes -> {out}")


def register(app: typer.Typer) -> None:
    app.command("sample")(sample_command)
