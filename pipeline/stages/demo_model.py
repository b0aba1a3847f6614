"""The demo's diffusion model: the trainer's tiny pixel-space folder with a faster UNet.

The demo has to pretrain a base and train adapters within minutes on two CPU cores.
``init-model --tiny --pixel`` puts attention at every resolution. Self-attention over
32x32 = 1024 tokens dominates its cost: measured at batch 16 on one core, about 2.8 s
per base step and 4.8 s per adapter step. This UNet keeps the same text encoder,
tokenizer and scheduler, and the same 32 px RGB input. Its first two levels are plain
ResNet blocks and attention (and so GLIGEN's gated layers) sits only at 8x8, about 0.3
and 0.4 s per step. Each 4x4-pixel token is still finer than the demo's objects, which
span 8 to 20 pixels at 32 px.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.core import defaults
from pipeline.core.atomic import atomic_output_dir
from pipeline.core.errors import UserError
from pipeline.core.outputs import claim_output

FAST_UNET = {
    "block_out_channels": (16, 32, 64),
    "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "layers_per_block": 1,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}


def write_demo_model(
    out: str | Path,
    seed: int = defaults.SEED,
    prediction_type: str = defaults.DEMO_PREDICTION_TYPE,
    clip_sample: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a complete diffusers folder (atomically); the same seed gives the same weights.

    ``prediction_type`` goes into the scheduler config, which training (the loss target)
    and sampling (DDIM built from that config) both read. The demo defaults to
    ``sample``, i.e. x0 prediction. With epsilon prediction a tiny model's loss hardly
    rewards knowing the layout at high noise, where layout is decided. After 400 base
    steps it also left visible noise in every sample. ``clip_sample`` clips predicted
    pixels to [-1, 1] while sampling, as pixel-space DDPMs do.
    """
    import json

    import torch
    from diffusers import UNet2DConditionModel

    from trainer.tiny import MODEL, PIXEL_SIZE, TEXT_WIDTH, build_tiny

    if prediction_type not in defaults.PREDICTION_TYPES:
        raise UserError(
            f"prediction type must be one of {defaults.PREDICTION_TYPES}, got {prediction_type!r}"
        )
    with claim_output(out, kind=MODEL, overwrite=overwrite):
        out = Path(out)
        with atomic_output_dir(out, kind=MODEL) as folder:
            build_tiny(folder, seed=seed, pixel=True)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                unet = UNet2DConditionModel(
                    sample_size=PIXEL_SIZE,
                    in_channels=3,
                    out_channels=3,
                    cross_attention_dim=TEXT_WIDTH,
                    **FAST_UNET,
                )
            shutil.rmtree(folder / "unet")
            unet.save_pretrained(folder / "unet")
            sched = folder / "scheduler" / "scheduler_config.json"
            config = json.loads(sched.read_text())
            config.update(prediction_type=prediction_type, clip_sample=bool(clip_sample))
            sched.write_text(json.dumps(config, indent=2) + "\n")
            (folder / "README.md").write_text(
                f"Demo model made by `groundset demo-model` (seed {seed}, {prediction_type} "
                "prediction): the tiny pixel-space "
                "SD1.x-style folder of `init-model --tiny --pixel` with a faster UNet "
                "(attention at 8x8 only). For the offline demo only.\n"
            )
        return out
