"""``groundset init-model``, ``sample`` and ``export-gligen``: thin CLI over the trainer modules."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline import defaults
from pipeline.errors import UserError

Opt = typer.Option
SCHEDULERS = ("ddim", "dpm")
DTYPES = ("float32", "float16", "bfloat16")


def init_model_command(
    out: Annotated[Path, Opt("--out", help="Model folder to write (replaced if it exists).")],
    tiny: Annotated[
        bool,
        Opt("--tiny", help="Write a tiny random SD1.x-style model (the only kind made locally)."),
    ] = False,
    pixel: Annotated[
        bool,
        Opt("--pixel", help="Leave the VAE out: the UNet denoises 32 px RGB images directly."),
    ] = False,
    seed: Annotated[int, Opt("--seed", help="Seed of the random weights.")] = 0,
) -> None:
    """Write a complete diffusers model folder for tests and demos, offline.

    Real weights are never made or downloaded here: pass a downloaded Stable Diffusion 1.x
    folder to --model instead.
    """
    if not tiny:
        raise UserError(
            "only --tiny models are made locally; for real weights download a diffusers SD1.x "
            "folder (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5) and pass it as --model"
        )
    from trainer.tiny import write_tiny

    path = write_tiny(out, seed=seed, pixel=pixel)
    typer.echo(f"init-model: tiny {'pixel' if pixel else 'latent'} model -> {path}")


def sample_command(
    model: Annotated[Path, Opt("--model", help="Local diffusers SD1.x or GLIGEN model folder.")],
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
        str, Opt("--scheduler", help="Sampler: ddim or dpm (DPM-Solver++ multistep).")
    ] = "ddim",
    seed: Annotated[int, Opt("--seed", help="Base seed; image i uses its own seed from it.")] = 0,
    limit: Annotated[
        int | None, Opt("--limit", help="Draw at most this many layouts (after --split).")
    ] = None,
    split: Annotated[
        str | None, Opt("--split", help="Use only records of this split (e.g. val).")
    ] = None,
    batch_size: Annotated[int, Opt("--batch-size", help="Images per forward pass.")] = 8,
    device: Annotated[
        str | None, Opt("--device", help="torch device (default: cuda if available, else cpu).")
    ] = None,
    dtype: Annotated[
        str, Opt("--dtype", help="Weights dtype: float32, float16 or bfloat16.")
    ] = "float32",
) -> None:
    """Draw one image per layout with GLIGEN's scheduled sampling; write images + layouts.

    The output is a dataset directory (records = the layouts asked for, images/ = the
    pictures), so `groundset evaluate` can score generated boxes against requested ones.
    A killed run resumes: images already drawn for the same request are kept.
    """
    if scheduler not in SCHEDULERS:
        raise UserError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    import torch

    from trainer.sample import sample_dataset

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
    )
    c = manifest["counts"]
    typer.echo(f"sample: {c['images_kept']} images, {c['boxes_kept']} boxes -> {out}")


def export_gligen_command(
    model: Annotated[Path, Opt("--model", help="Local diffusers SD1.x model folder (the base).")],
    out: Annotated[Path, Opt("--out", help="Pipeline folder to write (replaced if it exists).")],
    adapters: Annotated[
        Path | None,
        Opt("--adapters", help="Adapter .safetensors from `groundset train` (none: gates closed)."),
    ] = None,
    scheduler: Annotated[
        str, Opt("--scheduler", help="Scheduler saved with the pipeline: ddim or dpm.")
    ] = "ddim",
) -> None:
    """Merge base model + adapters into a folder diffusers' StableDiffusionGLIGENPipeline opens."""
    if scheduler not in SCHEDULERS:
        raise UserError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    from trainer.gligen_folder import write_gligen_folder

    path = write_gligen_folder(model, adapters, out, scheduler=scheduler)
    typer.echo(f"export-gligen: StableDiffusionGLIGENPipeline folder -> {path}")


def register(app: typer.Typer) -> None:
    app.command("init-model")(init_model_command)
    app.command("sample")(sample_command)
    app.command("export-gligen")(export_gligen_command)
