"""``groundset encode`` and ``groundset train``: thin CLIs over ``trainer.cache`` and ``trainer.train``."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline import defaults

Opt = typer.Option


def encode_command(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory whose images to encode.")],
    model: Annotated[str, Opt("--model", help="Diffusers SD1.x model folder (VAE + text encoder).")],
    out: Annotated[Path, Opt("--out", help="Cache directory to write (or finish, if interrupted).")],
    resolution: Annotated[int | None, Opt(
        "--resolution", help="Pixel count of the buckets is about RESOLUTION^2 [default: the model's own].")] = None,
    shard_size: Annotated[int, Opt("--shard-size", help="Samples per shard (the unit of resume).")] = defaults.CACHE_SHARD_SIZE,
    batch_size: Annotated[int, Opt("--batch-size", help="Images per encoder batch.")] = 8,
    captions: Annotated[int, Opt("--captions", help="Captions embedded per image (0 = all).")] = defaults.CACHE_CAPTIONS,
    dtype: Annotated[str, Opt("--dtype", help="float16 or float32 storage.")] = "float16",
    min_area: Annotated[float, Opt("--min-box-area", help="Boxes under this fraction of the crop are dropped.")] = defaults.MIN_BOX_AREA,
    seed: Annotated[int, Opt("--seed", help="Seed of the (fixed) crop of each image.")] = 0,
    device: Annotated[str | None, Opt("--device", help="cpu, cuda, cuda:1 ... [default: cuda if present].")] = None,
) -> None:
    """Precompute VAE latents (and their mirrored copies), caption and phrase embeddings.

    Training from the cache runs neither the VAE nor the text encoder. Each image's bucket and crop are fixed here; flips, caption choice and drops stay random at training time. A killed run started again skips the shards already written.
    """
    from pipeline.dataset import read_dataset
    from pipeline.errors import UserError

    if shard_size < 1 or batch_size < 1 or captions < 0:
        raise UserError("--shard-size and --batch-size must be >= 1, --captions >= 0")
    read_dataset(dataset, columns=["image_id"])  # a wrong path fails before torch is imported
    from trainer.cache import encode_dataset

    path = encode_dataset(dataset, model, out, resolution=resolution, shard_size=shard_size,
                          batch_size=batch_size, captions_per_image=captions, dtype=dtype,
                          min_area=min_area, seed=seed, device=device)
    typer.echo(f"encode: cache -> {path}")


def train_command(
    model: Annotated[str, Opt("--model", help="Diffusers SD1.x (or GLIGEN) model folder.")],
    data: Annotated[str, Opt("--data", help="Dataset directory (images encoded every step) or cache from `groundset encode`.")],
    out: Annotated[Path, Opt("--out", help="Run directory: checkpoint, dvclive metrics, adapters or model.")],
    mode: Annotated[str, Opt("--mode", help="adapters: train only GLIGEN's fuser + position_net on a frozen UNet; "
                                            "base: fine-tune the whole plain UNet (no gates).")] = "adapters",
    steps: Annotated[int, Opt("--steps", help="Optimiser steps in total (a resumed run counts from its start).")] = defaults.TRAIN_STEPS,
    batch_size: Annotated[int, Opt("--batch-size", help="Images per micro-batch per process.")] = defaults.BATCH_SIZE,
    lr: Annotated[float, Opt("--lr", help="AdamW learning rate after warm-up (GLIGEN: 5e-5).")] = defaults.LEARNING_RATE,
    warmup: Annotated[int, Opt("--warmup", help="Linear warm-up steps from 0 to --lr.")] = defaults.WARMUP_STEPS,
    grad_accum: Annotated[int, Opt("--grad-accum", help="Micro-batches per optimiser step.")] = defaults.GRAD_ACCUM,
    resolution: Annotated[int | None, Opt(
        "--resolution", help="Bucket pixel count ~ RESOLUTION^2 for image data [default: the model's own].")] = None,
    checkpoint_every: Annotated[int, Opt("--checkpoint-every", help="Steps between checkpoints.")] = defaults.CHECKPOINT_EVERY,
    monitor_every: Annotated[int, Opt("--monitor-every", help="Steps between detail-monitor PSNR evaluations (0 = off).")] = defaults.MONITOR_EVERY,
    resume: Annotated[bool, Opt("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    seed: Annotated[int, Opt("--seed", help="Seed of data order, augmentation, noise and adapter init.")] = 0,
    mixed_precision: Annotated[str, Opt("--mixed-precision", help="no, fp16 or bf16 (accelerate).")] = "no",
    caption_drop: Annotated[float, Opt("--caption-drop", help="Share of samples trained with an empty caption (GLIGEN 0.5).")] = defaults.CAPTION_DROP,
    grounding_drop: Annotated[float, Opt("--grounding-drop", help="Share of samples trained without boxes (GLIGEN 0.1).")] = defaults.GROUNDING_DROP,
    weights: Annotated[Path | None, Opt("--weights", help="Parquet image_id -> weight: per-image sampling weights (e.g. the audit's downweights).")] = None,
    workers: Annotated[int, Opt("--workers", help="Data loader worker processes.")] = 0,
    timestep_bias: Annotated[str, Opt("--timestep-bias", help="none (uniform, GLIGEN), earlier or later: "
                                      "weight the first/last --timestep-bias-portion of timesteps "
                                      "(diffusers' SDXL script). later = the noisy steps where layout is decided.")] = "none",
    timestep_bias_multiplier: Annotated[float, Opt("--timestep-bias-multiplier", help="Weight of the biased timesteps relative to the rest.")] = 1.0,
    timestep_bias_portion: Annotated[float, Opt("--timestep-bias-portion", help="Share of timesteps the bias applies to.")] = 0.25,
    attn_gate_init: Annotated[float, Opt("--attn-gate-init", help="Start value of every gated layer's alpha_attn (GLIGEN: 0). "
                                         "A non-zero start lets the layout attention learn in few steps.")] = 0.0,
) -> None:
    """Train GLIGEN adapters (or a base UNet) with accelerate; run under `accelerate launch` for multi-GPU.

    Writes RUN_DIR/adapters.safetensors (+ .json) in adapters mode or RUN_DIR/model/ (a complete diffusers folder) in base mode, plus RUN_DIR/checkpoint.pt and RUN_DIR/dvclive/ (loss, lr and the detail monitor's PSNR).
    """
    from trainer.train import TrainConfig, train

    summary = train(TrainConfig(
        model=model, data=str(data), out=str(out), mode=mode, steps=steps, batch_size=batch_size,
        lr=lr, warmup=warmup, grad_accum=grad_accum, resolution=resolution,
        checkpoint_every=checkpoint_every, monitor_every=monitor_every, resume=resume, seed=seed,
        mixed_precision=mixed_precision, caption_drop=caption_drop, grounding_drop=grounding_drop,
        weights=str(weights) if weights else None, workers=workers, timestep_bias=timestep_bias,
        timestep_bias_multiplier=timestep_bias_multiplier, timestep_bias_portion=timestep_bias_portion,
        attn_gate_init=attn_gate_init,
    ))
    what = summary.get("adapters") or summary.get("model")
    if what is None:  # not the main process of a multi-GPU run
        return
    typer.echo(f"train: {summary['steps']} steps ({summary['trainable_parameters']:,} parameters trained), "
               f"final loss {summary['final_loss']} -> {what}")


def register(app: typer.Typer) -> None:
    app.command("encode")(encode_command)
    app.command("train")(train_command)
