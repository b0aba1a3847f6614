"""Tiny, random but complete SDXL and SDXL-refiner diffusers folders, built offline.

The same idea as ``trainer.tiny`` (whose vocabulary, tokenizer writer and VAE layout are
reused), with SDXL's parts and proportions:

- a UNet with ``addition_embed_type="text_time"`` whose ``cross_attention_dim`` is the
  two text encoders' widths side by side (SDXL: 768 + 1280 = 2048), a first level
  without attention and more transformer layers deeper down (SDXL: 0, 2, 10; here 0, 2);
- ``text_encoder`` (CLIP, SDXL's ViT-L) and ``text_encoder_2`` with a projection
  (SDXL's OpenCLIP bigG, whose projected pooled output conditions the UNet);
- ``tokenizer_2`` padding with ``!`` as SDXL's does; SDXL's VAE scaling factor 0.13025;
- SDXL's ``EulerDiscreteScheduler`` config (same betas as SD 1.x, "leading" spacing).

Sizes are SDXL's divided by 8, as the SD 1.x tiny model divides SD's: 1024 px becomes
128 px images and 16x16 latents, so the SDXL bucket set shrinks in proportion.

The refiner folder has no ``text_encoder``: its UNet reads ``text_encoder_2``'s hidden
states only and takes 5 time ids (an aesthetic score in place of the target size). Each
part is drawn from its own seed, so the refiner's VAE and second text encoder equal the
base model's (SDXL's refiner ships the base's VAE and bigG encoder too).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trainer.tiny import MAX_TOKENS, TEXT_WIDTH, tiny_vae, tiny_vocab, write_tokenizer

SIDE = 128  # SDXL's 1024 px / 8
LATENT_SIDE = SIDE // 8
TIME_WIDTH = 8  # addition_time_embed_dim (SDXL: 256)
POOLED_WIDTH = TEXT_WIDTH  # text_encoder_2 projection_dim (SDXL: 1280, equal to its width)
VAE_SCALE = 0.13025  # SDXL's VAE scaling factor
PART_SEEDS = {"vae": 1, "text_encoder": 2, "text_encoder_2": 3, "unet": 4, "refiner_unet": 5}


def tiny_sdxl_unet(refiner: bool = False):
    from diffusers import UNet2DConditionModel

    n_ids = 5 if refiner else 6
    return UNet2DConditionModel(
        sample_size=LATENT_SIDE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2),
        cross_attention_dim=TEXT_WIDTH if refiner else 2 * TEXT_WIDTH,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_WIDTH,
        projection_class_embeddings_input_dim=POOLED_WIDTH + n_ids * TIME_WIDTH,
        norm_num_groups=8,
    )


def tiny_text_config(vocab: dict, projection: bool):
    from transformers import CLIPTextConfig

    from trainer.tiny import BOS, EOS

    return CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=TEXT_WIDTH,
        intermediate_size=64,
        num_hidden_layers=3 if projection else 2,  # SDXL's bigG is the deeper one
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=POOLED_WIDTH if projection else TEXT_WIDTH,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab["!"] if projection else vocab[EOS],
    )


def tiny_euler_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        steps_offset=1,
        timestep_spacing="leading",
    )


def _seeded(seed: int, part: str, make):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1000 + PART_SEEDS[part])
        return make()


def build_tiny_sdxl(folder: Path, seed: int = 0, refiner: bool = False) -> None:
    """Write the tiny SDXL (or refiner) folder's parts into the existing ``folder``."""
    import diffusers
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    vocab, merges = tiny_vocab()
    vae = _seeded(seed, "vae", tiny_vae)
    vae.register_to_config(scaling_factor=VAE_SCALE, sample_size=SIDE, force_upcast=True)
    vae.save_pretrained(folder / "vae")
    te2 = _seeded(
        seed,
        "text_encoder_2",
        lambda: CLIPTextModelWithProjection(tiny_text_config(vocab, projection=True)),
    )
    te2.save_pretrained(folder / "text_encoder_2")
    write_tokenizer(folder / "tokenizer_2", vocab, merges, pad_token="!")
    if not refiner:
        te1 = _seeded(seed, "text_encoder", lambda: CLIPTextModel(tiny_text_config(vocab, False)))
        te1.save_pretrained(folder / "text_encoder")
        write_tokenizer(folder / "tokenizer", vocab, merges)
    unet = _seeded(seed, "refiner_unet" if refiner else "unet", lambda: tiny_sdxl_unet(refiner))
    unet.save_pretrained(folder / "unet")
    tiny_euler_scheduler().save_pretrained(folder / "scheduler")
    none = [None, None]
    index = {
        "_class_name": (
            "StableDiffusionXLImg2ImgPipeline" if refiner else "StableDiffusionXLPipeline"
        ),
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": none,
        "image_encoder": none,
        "force_zeros_for_empty_prompt": not refiner,  # as SDXL's own folders say
        **({"requires_aesthetics_score": True} if refiner else {}),
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": none if refiner else ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": none if refiner else ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    kind = "SDXL refiner" if refiner else "SDXL"
    (folder / "README.md").write_text(
        f"Tiny random diffusers {kind}-style model made by `groundset init-model --tiny "
        f"--arch {'sdxl-refiner' if refiner else 'sdxl'}` (seed {seed}). For tests only.\n"
    )
