"""Full-size SDXL UNet, random weights, on a GPU: adapters-only training against full fine-tuning.

Issue #14's GPU figure, prepared as one script so a session that is lent a GPU runs it
once: SDXL 1.0's UNet config (2.6B parameters) with GLIGEN's gated layers, random
weights (no download), float32 weights under bf16 autocast as ``groundset train
--mixed-precision bf16`` runs, 1024x1024 images (128x128 latents), batch 4, AdamW. For
each mode it reports images per second (median of the timed steps) and peak GPU memory;
a mode that runs out of memory is reported as such, not as a crash.

    python bench/sdxl_gpu.py --json bench_sdxl_gpu.json       # on the GPU machine
    python bench/sdxl_gpu.py --tiny --device cpu              # the same code on the tiny SDXL

``--tiny`` uses ``trainer.tiny_sdxl``'s UNet so the script itself is tested without a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json, the values that size it
SDXL_UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}


def build(tiny: bool, device):
    from diffusers import UNet2DConditionModel

    if tiny:
        from trainer.tiny_sdxl import tiny_sdxl_unet

        config = dict(tiny_sdxl_unet().config)
    else:
        config = dict(SDXL_UNET)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config["attention_type"] = "gated"
    with torch.device(device):
        return UNet2DConditionModel(**config)


def inputs(unet, batch: int, device) -> tuple:
    c = unet.config
    side, dim = c.sample_size, c.cross_attention_dim
    pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
    g = torch.Generator(device).manual_seed(0)
    z = torch.randn(batch, 4, side, side, generator=g, device=device)
    cond = {
        "encoder_hidden_states": torch.randn(batch, 77, dim, generator=g, device=device),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(batch, pooled, generator=g, device=device),
            "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * batch, device=device),
        },
    }
    gligen = {
        "boxes": torch.rand(batch, 30, 4, generator=g, device=device),
        "masks": torch.ones(batch, 30, device=device),
        "positive_embeddings": torch.randn(batch, 30, dim, generator=g, device=device),
    }
    return z, cond, gligen


def measure(mode: str, args) -> dict:
    from trainer.model import freeze_for_adapters

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    unet = build(args.tiny, device).train()
    params = freeze_for_adapters(unet) if mode == "adapters" else list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5)
    z, cond, gligen = inputs(unet, args.batch, device)
    times = []
    try:
        for step in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            t = torch.randint(0, 1000, (args.batch,), device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out = unet(z, t, **cond, cross_attention_kwargs={"gligen": dict(gligen)}).sample
            out.float().pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize(device)
            if step >= args.warmup:
                times.append(time.perf_counter() - t0)
    except torch.OutOfMemoryError:
        return {"mode": mode, "out_of_memory": True, **_peak(device)}
    return {
        "mode": mode,
        "trainable_parameters": sum(p.numel() for p in params),
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "step_s_median": round(statistics.median(times), 4),
        "img_per_s": round(args.batch / statistics.median(times), 3),
        "all_step_s": [round(t, 4) for t in times],
        **_peak(device),
    }


def _peak(device) -> dict:
    if device.type != "cuda":
        return {}
    return {"peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=10, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="the tiny SDXL UNet (tests the script)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    result = {
        "unet": "tiny SDXL" if args.tiny else "SDXL 1.0 config, random weights, gated",
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device,
        "dtype": "float32 weights, bf16 autocast",
        "batch": args.batch,
        "image_px": 1024 if not args.tiny else 128,
        "runs": [measure(mode, args) for mode in ("adapters", "full")],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
