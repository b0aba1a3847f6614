"""A tiny, randomly initialised but complete diffusers SD1.x model folder, built offline.

Tests, CI and the demo cannot download weights, yet every command must run end to end
on a real diffusers folder. This writes one in a second: a plain (gated-ready) UNet whose
``cross_attention_dim`` equals the tiny CLIP text model's width (so pooled phrase
embeddings fit ``position_net``), a tiny ``AutoencoderKL``, a CLIP tokenizer whose BPE
vocabulary is written here, a DDPM scheduler with SD's noise schedule, and
``model_index.json``, so diffusers' own ``from_pretrained`` loads it too.

The latent model keeps SD1.x's proportions, not just its classes: its VAE is SD's
``AutoencoderKL`` layout (four down/up levels, two ResNet layers per level, channel
multipliers 1, 2, 4, 4, attention in the mid block) at 1/16 of the width, so it
downsamples by 8 as SD's does; 64 px images become 8x8 latents for a two-level UNet.
Relative to the UNet's adapter step, its encoder costs about what SD1.5's 512 px encoder
costs next to SD1.5's UNet (see ``bench/train.py``), so what the encode cache saves
here is what it saves on SD, not an artefact of a VAE far cheaper than SD's.

``pixel=True`` leaves the VAE out: the UNet then works on RGB pixels directly. A random
VAE decodes to noise, so a demo that must *see* what a tiny model learned either trains a
VAE or, more simply, stays in pixel space.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.core.atomic import atomic_output_dir

TEXT_WIDTH = 32  # CLIP hidden size == UNet cross_attention_dim == phrase embedding width
MAX_TOKENS = 77  # SD's prompt length
MODEL = "model"  # the output kind of a model folder (pipeline.core.outputs)
VAE_CHANNELS = (8, 16, 32, 32)  # SD1.x's (128, 256, 512, 512) / 16: 4 levels, side / 8
IMAGE_SIZE = 64  # latent model: 64 px images ...
LATENT_SIZE = IMAGE_SIZE // 2 ** (len(VAE_CHANNELS) - 1)  # ... are 8x8 latents
PIXEL_SIZE = 32  # pixel model (the demo's): the UNet sees 32 px RGB directly
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Words that get their own token, so captions and COCO phrases are a few tokens each.
_WORDS = """a an the of on in with and at to near next by is are two three photo picture image
person people man woman child bicycle car motorcycle airplane bus train truck boat traffic light
fire hydrant stop sign parking meter bench bird cat dog horse sheep cow elephant bear zebra giraffe
backpack umbrella handbag tie suitcase frisbee skis snowboard sports ball kite baseball bat glove
skateboard surfboard tennis racket bottle wine glass cup fork knife spoon bowl banana apple sandwich
orange broccoli carrot hot pizza donut cake chair couch potted plant bed dining table toilet tv
laptop mouse remote keyboard cell phone microwave oven toaster sink refrigerator book clock vase
scissors teddy hair drier toothbrush red green blue yellow black white square circle triangle
small large big left right top bottom middle"""
WORDS = _WORDS.split()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte-to-printable-character table."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiny_vocab() -> tuple[dict[str, int], list[str]]:
    """A CLIP-style BPE vocabulary: all bytes (so any text encodes), whole-word merges, specials last.

    The special tokens come last so the end-of-text token has the highest id, which both
    of CLIP's pooling rules (argmax id, or first ``eos_token_id``) pick out.
    """
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    seen = set(tokens)
    for word in dict.fromkeys(WORDS):
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        left = parts[0]
        for right in parts[1:]:
            merged = left + right
            if merged not in seen:
                merges.append(f"{left} {right}")
                tokens.append(merged)
                seen.add(merged)
            left = merged
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def tiny_unet(pixel: bool):
    from diffusers import UNet2DConditionModel

    channels = 3 if pixel else 4
    return UNet2DConditionModel(
        sample_size=PIXEL_SIZE if pixel else LATENT_SIZE,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(VAE_CHANNELS),
        up_block_types=("UpDecoderBlock2D",) * len(VAE_CHANNELS),
        block_out_channels=VAE_CHANNELS,
        layers_per_block=2,  # SD's
        latent_channels=4,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
        scaling_factor=0.18215,
    )


def tiny_text(vocab: dict[str, int]):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=TEXT_WIDTH,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=TEXT_WIDTH,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[EOS],
    )
    return CLIPTextModel(config)


def tiny_scheduler():
    from diffusers import DDPMScheduler

    # Stable Diffusion 1.x's noise schedule and epsilon prediction.
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
    )


def write_tokenizer(
    folder: Path, vocab: dict[str, int], merges: list[str], pad_token: str | None = None
) -> None:
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    pairs = [tuple(m.split(" ")) for m in merges]
    extra = {"pad_token": pad_token} if pad_token else {}
    tok = CLIPTokenizer(vocab=vocab, merges=pairs, model_max_length=MAX_TOKENS, **extra)
    tok.save_pretrained(folder)


def write_tiny(out_dir: str | Path, seed: int = 0, pixel: bool = False, arch: str = "sd1") -> Path:
    """Write the folder atomically; the same seed gives the same weights.

    ``arch`` is ``sd1`` (this module), ``sdxl`` or ``sdxl-refiner`` (``trainer.tiny_sdxl``).
    """
    from trainer.arch import ARCHS, SD1, SDXL_REFINER
    from trainer.quiet import quiet_libraries

    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if pixel and arch != SD1:
        raise ValueError("only the SD 1.x tiny model has a pixel-space variant")
    quiet_libraries()
    out = Path(out_dir)
    with atomic_output_dir(out, kind=MODEL) as tmp:
        if arch == SD1:
            build_tiny(tmp, seed=seed, pixel=pixel)
        else:
            from trainer.tiny_sdxl import build_tiny_sdxl

            build_tiny_sdxl(tmp, seed=seed, refiner=arch == SDXL_REFINER)
    return out


def build_tiny(folder: Path, seed: int = 0, pixel: bool = False) -> None:
    """Write the tiny model's parts into the existing folder ``folder``."""
    import diffusers

    vocab, merges = tiny_vocab()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = tiny_unet(pixel)
        vae = None if pixel else tiny_vae()
        text = tiny_text(vocab)
    unet.save_pretrained(folder / "unet")
    if vae is not None:
        vae.save_pretrained(folder / "vae")
    text.save_pretrained(folder / "text_encoder")
    write_tokenizer(folder / "tokenizer", vocab, merges)
    tiny_scheduler().save_pretrained(folder / "scheduler")
    # SD's own scheduler config says set_alpha_to_one=False; DDIM built from it must agree.
    sched_cfg = folder / "scheduler" / "scheduler_config.json"
    sched_cfg.write_text(
        json.dumps({**json.loads(sched_cfg.read_text()), "set_alpha_to_one": False}, indent=2)
    )
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"] if vae is not None else [None, None],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (folder / "README.md").write_text(
        f"Tiny random diffusers SD1.x-style model made by `groundset init-model --tiny` "
        f"(seed {seed}, {'pixel space' if pixel else 'latent space'}). For tests and demos only.\n"
    )
