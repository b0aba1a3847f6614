"""What the encode cache can save: FLOPs of each part of an adapter step, SD1.5 and tiny.

Training from images runs, per image, the VAE encoder and the text encoder (caption and
phrases) before the UNet's forward + backward; the cache leaves only the UNet. The saving
is bounded by how large the encoders are next to the UNet, which is a property of the
model: counted here with torch's ``FlopCounterMode`` on the meta device (no weights, no
memory, a few seconds) for SD1.5's configuration at 512 px and for any diffusers folder
(the tiny model by default). Only the adapters (``fuser``, ``position_net``) are
trainable, as in GLIGEN's training, so the backward computes input gradients through the
frozen UNet and weight gradients only for the adapters.

    python bench/step_flops.py                  # SD1.5 at 512 px against write_tiny
    python bench/step_flops.py --time 512       # also time SD1.5 (random weights, batch 1) on this CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHRASES = 3  # per image, as the bench's photos have; 8 tokens each (a short COCO phrase)
PHRASE_TOKENS = 8
MAX_BOXES = 30

# Stable Diffusion 1.5's unet/, vae/ and text_encoder/ config.json (the values that size them).
SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
}
SD15_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512),
    "norm_num_groups": 32,
    "sample_size": 512,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
}
SD15_TEXT = {  # CLIP ViT-L/14's text tower
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
}


def build(unet_cfg: dict, vae_cfg: dict, text_cfg: dict, device):
    """Gated UNet with only the adapters trainable, VAE and text encoder, random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from trainer.model import freeze_for_adapters

    with torch.device(device):
        unet = UNet2DConditionModel.from_config({**unet_cfg, "attention_type": "gated"})
        vae = AutoencoderKL.from_config(vae_cfg).eval()
        text = CLIPTextModel(CLIPTextConfig(**text_cfg)).eval()
    freeze_for_adapters(unet)  # the trainer's own rule: only fuser + position_net learn
    for p in (*vae.parameters(), *text.parameters()):
        p.requires_grad_(False)
    return unet, vae, text


def folder_configs(model: str | Path) -> tuple[dict, dict, dict]:
    root = Path(model)
    return tuple(
        json.loads((root / sub / "config.json").read_text())
        for sub in ("unet", "vae", "text_encoder")
    )


def own_resolution(configs) -> int:
    """The image side a latent model is built for (as ``Components.resolution``)."""
    unet, vae, _ = configs
    return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)


def step_parts(unet, vae, text, px: int, batch: int, device) -> dict:
    """The three parts of an images-path adapter step, as closures over random inputs."""
    lat = px // 2 ** (len(vae.config.block_out_channels) - 1)
    d, vocab = unet.config.cross_attention_dim, text.config.vocab_size
    x = torch.rand(batch, 3, px, px, device=device) * 2 - 1
    z = torch.randn(batch, 4, lat, lat, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    cap = torch.randn(batch, text.config.max_position_embeddings, d, device=device)
    gligen = {
        "boxes": torch.rand(batch, MAX_BOXES, 4, device=device),
        "masks": torch.ones(batch, MAX_BOXES, device=device),
        "positive_embeddings": torch.randn(batch, MAX_BOXES, d, device=device),
    }
    ids = torch.randint(0, vocab, (batch, text.config.max_position_embeddings), device=device)
    phrase_ids = torch.randint(0, vocab, (batch * PHRASES, PHRASE_TOKENS), device=device)

    def vae_encode():
        with torch.no_grad():
            vae.encode(x).latent_dist.mode()

    def text_encode():
        with torch.no_grad():
            text(ids)
            text(phrase_ids)

    def unet_step():
        out = unet(
            z, t, encoder_hidden_states=cap, cross_attention_kwargs={"gligen": gligen}
        ).sample
        out.float().pow(2).mean().backward()

    return {"vae_encode": vae_encode, "text_encode": text_encode, "unet_fwd_bwd": unet_step}


def count_flops(parts: dict) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    for name, fn in parts.items():
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        out[name] = counter.get_total_flops()
    return out


def flop_shares(configs: tuple[dict, dict, dict], px: int) -> dict:
    """GFLOPs per image of each part, and each encoder's cost relative to the UNet step."""
    parts = step_parts(*build(*configs, "meta"), px, 1, "meta")
    f = count_flops(parts)
    unet = f["unet_fwd_bwd"]
    return {
        "image_px": px,
        **{f"gflop_{k}": round(v / 1e9, 4) for k, v in f.items()},
        "vae_per_unet": round(f["vae_encode"] / unet, 3),
        "text_per_unet": round(f["text_encode"] / unet, 4),
        "encoder_share_of_images_step": round(
            (f["vae_encode"] + f["text_encode"]) / sum(f.values()), 3
        ),
        "flop_bound_cache_speedup": round(sum(f.values()) / unet, 3),
    }


def time_parts(configs, px: int, repeats: int = 1) -> dict:
    """Seconds per image of each part on this CPU (best of ``repeats``, after one warm-up)."""
    torch.manual_seed(0)
    parts = step_parts(*build(*configs, "cpu"), px, 1, "cpu")
    out = {}
    for name, fn in parts.items():
        fn()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        out[f"s_{name}"] = round(best, 4)
    out["vae_per_unet"] = round(out["s_vae_encode"] / out["s_unet_fwd_bwd"], 3)
    out["text_per_unet"] = round(out["s_text_encode"] / out["s_unet_fwd_bwd"], 4)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", help="diffusers folder to compare with SD1.5 (default: a fresh tiny model)"
    )
    p.add_argument(
        "--resolution", type=int, help="image side of --model (default: the model's own)"
    )
    p.add_argument(
        "--time", type=int, metavar="PX", help="also time SD1.5 at PX px on this CPU (slow at 512)"
    )
    p.add_argument(
        "--repeats", type=int, default=1, help="timed runs per part after one warm-up (best kept)"
    )
    args = p.parse_args()
    import tempfile

    from trainer.quiet import quiet_libraries
    from trainer.tiny import write_tiny

    quiet_libraries()
    sd = (SD15_UNET, SD15_VAE, SD15_TEXT)
    result = {"sd15": flop_shares(sd, 512)}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or write_tiny(Path(tmp) / "tiny")
        cfgs = folder_configs(model)
        px = args.resolution or own_resolution(cfgs)
        result["model"] = {
            "path": "tiny (write_tiny)" if not args.model else str(model),
            **flop_shares(cfgs, px),
        }
    if args.time:
        result["sd15_cpu_seconds"] = {
            "image_px": args.time,
            "threads": torch.get_num_threads(),
            **time_parts(sd, args.time, args.repeats),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
