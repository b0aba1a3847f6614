"""Model folders are user input: where one comes from, and whether it is whole.

A ``--model`` is a local diffusers folder or a Hugging Face hub id already in the local
cache; nothing is downloaded at run time. A path that does not exist is never looked up
as a hub id: ``models/sd15`` beside a ``models/`` folder is a typo, not a repository.

Model folders are copied, half-downloaded and edited like any dataset, so each part is
checked before the heavy libraries read it, and whatever diffusers, transformers or
safetensors raise while reading it becomes one ``UserError`` line naming the folder, the
part and where to get weights, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from pipeline.core.errors import UserError

SUBFOLDERS = ("unet", "text_encoder", "tokenizer", "scheduler")  # vae is optional (pixel space)
# the parts each family needs (trainer.arch): SDXL adds a second encoder, its refiner has only that
TEXT_PARTS = {
    "sd1": ("text_encoder", "tokenizer"),
    "sdxl": ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"),
    "sdxl-refiner": ("text_encoder_2", "tokenizer_2"),
}
CONFIGS = {
    "unet": "config.json",
    "vae": "config.json",
    "text_encoder": "config.json",
    "text_encoder_2": "config.json",
    "scheduler": "scheduler_config.json",
}
WEIGHT_SUFFIXES = (".safetensors", ".bin")  # .bin is read by the libraries with weights_only
WEIGHTS_HINT = (
    "download a diffusers Stable Diffusion 1.x folder on a machine with internet, e.g. "
    "`huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir DIR` "
    "(or a GLIGEN folder such as masterful/gligen-1-4-generation-text-box), or make a tiny "
    "test model with `groundset init-model --tiny --out DIR`"
)
# a hub repository id: exactly one "/", no leading "." "/" "~", no backslash (huggingface_hub's
# validate_repo_id additionally refuses "--" and "..")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
# model files only: no EMA or fp16 variants, which SD repositories also ship
HUB_PATTERNS = ["model_index.json"] + [
    f"{d}/*.{ext}"
    for d in (*SUBFOLDERS, "vae", "text_encoder_2", "tokenizer_2")
    for ext in ("json", "txt", "safetensors")
]
HUB_SKIP = ["*non_ema*", "*.ema.*", "*.fp16.*"]


def looks_like_path(text: str) -> bool:
    """Whether ``text`` can only mean a local folder, so it must never be sent to the hub.

    A hub id is exactly ``org/name``. A leading ``.``, ``/`` or ``~``, a backslash, no
    ``/`` or more than one, ``--`` or ``..``, or a first part that exists here
    (``models/sd15`` beside a ``models/`` folder) all name a path.
    """
    if not HUB_ID.fullmatch(text) or "--" in text or ".." in text:
        return True
    return os.path.lexists(text.split("/")[0])


def resolve_model(model: str | Path) -> Path:
    """A local folder as is; a hub id only from the local Hugging Face cache.

    Nothing is downloaded at run time, online or not: a hub id (``org/name``, where no
    ``org`` folder exists here) is looked up with ``local_files_only``, which reads the
    cache and opens no connection, and anything else is a missing folder. An unset
    ``HF_HUB_OFFLINE`` on a machine without network therefore costs no connection
    attempt, and on one with network no surprise download.
    """
    text = str(model)
    p = Path(text).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise UserError(f"model {p} is a file, not a diffusers model folder; {WEIGHTS_HINT}")
    if looks_like_path(text):
        raise UserError(f"model folder {p} does not exist; {WEIGHTS_HINT}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - diffusers depends on it
        raise UserError(f"model folder {p} does not exist; {WEIGHTS_HINT}") from None
    try:
        return Path(
            snapshot_download(
                text,
                allow_patterns=HUB_PATTERNS,
                ignore_patterns=HUB_SKIP,
                local_files_only=True,
            )
        )
    except Exception:  # noqa: BLE001 - not in the cache: the hub library raises several types
        raise UserError(
            f"model {text!r} is neither a local folder nor in the Hugging Face cache, and "
            f"groundset downloads nothing (`huggingface-cli download {text}` does); "
            f"{WEIGHTS_HINT}"
        ) from None


def _read_config(path: Path, sub: str) -> dict:
    f = path / sub / CONFIGS[sub]
    try:
        config = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        why = "is missing" if not f.exists() else f"is not valid JSON ({type(e).__name__})"
        raise UserError(f"model {path}: {sub}/{f.name} {why}; {WEIGHTS_HINT}") from None
    if not isinstance(config, dict):
        raise UserError(f"model {path}: {sub}/{f.name} is not a JSON object; {WEIGHTS_HINT}")
    return config


def check_model_folder(path: Path) -> None:
    """Every part a diffusers SD1.x folder needs is there, before any library reads one.

    The VAE may only be missing from a pixel-space model: a UNet that takes latents
    (not 3-channel RGB) has nothing to encode images or decode samples without it.
    """
    from trainer.arch import arch_of_folder

    parts = ("unet", *TEXT_PARTS[arch_of_folder(path)], "scheduler")
    missing = [d for d in parts if not (path / d).is_dir()]
    if missing:
        raise UserError(
            f"{path} is not a diffusers model folder (missing {', '.join(missing)}/); {WEIGHTS_HINT}"
        )
    has_vae = (path / "vae").is_dir()
    for sub in CONFIGS:
        if sub in parts or (sub == "vae" and has_vae):
            _read_config(path, sub)
    unet_channels = _read_config(path, "unet").get("in_channels", 4)
    if not has_vae and unet_channels != 3:
        raise UserError(
            f"model {path} has no vae/, but its UNet takes {unet_channels}-channel latents, not "
            f"RGB pixels; copy the vae/ folder of the model it came from; {WEIGHTS_HINT}"
        )
    weighted = [p for p in parts if p in ("unet", "text_encoder", "text_encoder_2")]
    for sub in (*weighted, *(("vae",) if has_vae else ())):
        if not any(f.suffix in WEIGHT_SUFFIXES for f in (path / sub).iterdir()):
            raise UserError(
                f"model {path}: {sub}/ holds no weights (*.safetensors); {WEIGHTS_HINT}"
            )
    for name in (p for p in parts if p.startswith("tokenizer")):
        tok = path / name
        if not (tok / "tokenizer.json").is_file() and not all(
            (tok / f).is_file() for f in ("vocab.json", "merges.txt")
        ):
            raise UserError(
                f"model {path}: {name}/ has neither tokenizer.json nor vocab.json + merges.txt; "
                f"{WEIGHTS_HINT}"
            )


def load_part(path: Path, sub: str, load):
    """``load(path / sub)``, with any library error turned into one line naming the part."""
    try:
        return load(path / sub)
    except Exception as e:  # noqa: BLE001 - diffusers, transformers, safetensors: many types
        text = str(e).strip()
        first = text.splitlines()[0][:200] if text else type(e).__name__
        raise UserError(f"model {path}: cannot load {sub}/ ({first}); {WEIGHTS_HINT}") from None


def check_fit(
    path: Path, unet, vae, text_encoder, tokenizer, text_encoder_2=None, tokenizer_2=None
):
    """The parts work together: widths, latent channels, token ids and prompt length.

    The UNet's cross-attention reads the text encoders' hidden states side by side (one
    encoder for SD 1.x and SDXL's refiner, both for SDXL), so the widths must add up.
    """
    pairs = (("tokenizer", text_encoder, tokenizer), ("tokenizer_2", text_encoder_2, tokenizer_2))
    encoders = [(name, te, tok) for name, te, tok in pairs if te is not None]
    width = sum(te.config.hidden_size for _, te, _ in encoders)
    if width != unet.config.cross_attention_dim:
        raise UserError(
            f"{path}: text encoder width {width} does not match the "
            f"UNet's cross_attention_dim {unet.config.cross_attention_dim}"
        )
    if vae is not None and vae.config.latent_channels != unet.config.in_channels:
        raise UserError(
            f"{path}: the VAE makes {vae.config.latent_channels}-channel latents, the UNet "
            f"takes {unet.config.in_channels} channels"
        )
    # an empty or foreign tokenizer loads, then pads prompts to 1e30 tokens or emits ids
    # past the text encoder's embedding table
    for name, te, tok in encoders:
        te = te.config
        if len(tok) > te.vocab_size or tok.model_max_length > te.max_position_embeddings:
            raise UserError(
                f"model {path}: {name}/ does not fit its text encoder ({len(tok)} tokens, "
                f"prompts of {tok.model_max_length}; the encoder takes {te.vocab_size} tokens, "
                f"prompts of {te.max_position_embeddings}); {WEIGHTS_HINT}"
            )
