"""``groundset train``: GLIGEN adapters (or a base UNet) with accelerate."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import Overwrite
from pipeline.core import defaults

Opt = typer.Option


def train_command(
    model: Annotated[str, Opt("--model", help="Diffusers SD1.x or SDXL (or GLIGEN) model folder.")],
    data: Annotated[
        str,
        Opt(
            "--data",
            help="Dataset directory (images encoded every step) or cache from `groundset encode`.",
        ),
    ],
    out: Annotated[
        Path, Opt("--out", help="Run directory: checkpoint, dvclive metrics, adapters or model.")
    ],
    mode: Annotated[
        str,
        Opt(
            "--mode",
            help="adapters: train only GLIGEN's fuser + position_net on a frozen UNet; "
            "base: fine-tune the whole plain UNet (no gates).",
        ),
    ] = defaults.TRAIN_MODE,
    steps: Annotated[
        int, Opt("--steps", help="Optimiser steps in total (a resumed run counts from its start).")
    ] = defaults.TRAIN_STEPS,
    batch_size: Annotated[
        int, Opt("--batch-size", help="Images per micro-batch per process.")
    ] = defaults.BATCH_SIZE,
    lr: Annotated[
        float, Opt("--lr", help="AdamW learning rate after warm-up (GLIGEN: 5e-5).")
    ] = defaults.LEARNING_RATE,
    warmup: Annotated[
        int, Opt("--warmup", help="Linear warm-up steps from 0 to --lr.")
    ] = defaults.WARMUP_STEPS,
    grad_accum: Annotated[
        int, Opt("--grad-accum", help="Micro-batches per optimiser step.")
    ] = defaults.GRAD_ACCUM,
    resolution: Annotated[
        int | None,
        Opt(
            "--resolution",
            help="Bucket pixel count ~ RESOLUTION^2 for image data [default: the model's own].",
        ),
    ] = None,
    checkpoint_every: Annotated[
        int, Opt("--checkpoint-every", help="Steps between checkpoints.")
    ] = defaults.CHECKPOINT_EVERY,
    monitor_every: Annotated[
        int, Opt("--monitor-every", help="Steps between detail-monitor PSNR evaluations (0 = off).")
    ] = defaults.MONITOR_EVERY,
    resume: Annotated[
        bool, Opt("--resume", help="Continue the run in --out from its last checkpoint.")
    ] = False,
    seed: Annotated[
        int, Opt("--seed", help="Seed of data order, augmentation, noise and adapter init.")
    ] = defaults.SEED,
    mixed_precision: Annotated[
        str, Opt("--mixed-precision", help="no, fp16 or bf16 (accelerate).")
    ] = defaults.MIXED_PRECISION,
    caption_drop: Annotated[
        float,
        Opt("--caption-drop", help="Share of samples trained with an empty caption (GLIGEN 0.5)."),
    ] = defaults.CAPTION_DROP,
    grounding_drop: Annotated[
        float, Opt("--grounding-drop", help="Share of samples trained without boxes (GLIGEN 0.1).")
    ] = defaults.GROUNDING_DROP,
    weights: Annotated[
        Path | None,
        Opt(
            "--weights",
            help="Parquet image_id -> weight: per-image sampling weights (e.g. the audit's downweights).",
        ),
    ] = None,
    workers: Annotated[
        int, Opt("--workers", help="Data loader worker processes.")
    ] = defaults.DATA_WORKERS,
    timestep_bias: Annotated[
        str,
        Opt(
            "--timestep-bias",
            help="none (uniform, GLIGEN), earlier or later: "
            "weight the first/last --timestep-bias-portion of timesteps "
            "(diffusers' SDXL script). later = the noisy steps where layout is decided.",
        ),
    ] = defaults.TIMESTEP_BIAS,
    timestep_bias_multiplier: Annotated[
        float,
        Opt(
            "--timestep-bias-multiplier",
            help="Weight of the biased timesteps relative to the rest.",
        ),
    ] = defaults.TIMESTEP_BIAS_MULTIPLIER,
    timestep_bias_portion: Annotated[
        float, Opt("--timestep-bias-portion", help="Share of timesteps the bias applies to.")
    ] = defaults.TIMESTEP_BIAS_PORTION,
    attn_gate_init: Annotated[
        float,
        Opt(
            "--attn-gate-init",
            help="Start value of every gated layer's alpha_attn (GLIGEN: 0). "
            "A non-zero start lets the layout attention learn in few steps.",
        ),
    ] = defaults.ATTN_GATE_INIT,
    overwrite: Overwrite = False,
) -> None:
    """Train GLIGEN adapters (or a base UNet) with accelerate; run under `accelerate launch` for multi-GPU.

    Writes RUN_DIR/adapters.safetensors (+ .json) in adapters mode or RUN_DIR/model/ (a complete diffusers folder) in base mode, plus RUN_DIR/checkpoint.pt and RUN_DIR/dvclive/ (loss, lr and the detail monitor's PSNR).
    """
    from pipeline.stages.train import train

    summary = train(
        model=model,
        data=str(data),
        out=str(out),
        mode=mode,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        grad_accum=grad_accum,
        resolution=resolution,
        checkpoint_every=checkpoint_every,
        monitor_every=monitor_every,
        resume=resume,
        seed=seed,
        mixed_precision=mixed_precision,
        caption_drop=caption_drop,
        grounding_drop=grounding_drop,
        weights=str(weights) if weights else None,
        workers=workers,
        timestep_bias=timestep_bias,
        timestep_bias_multiplier=timestep_bias_multiplier,
        timestep_bias_portion=timestep_bias_portion,
        attn_gate_init=attn_gate_init,
        overwrite=overwrite,
    )
    what = summary.get("adapters") or summary.get("model")
    if what is None:  # not the main process of a multi-GPU run
        return
    typer.echo(
        f"train: {summary['steps']} steps ({summary['trainable_parameters']:,} parameters trained), "
        f"final loss {summary['final_loss']} -> {what}"
    )


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
