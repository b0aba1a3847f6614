"""Which family a diffusers model folder belongs to, read from the folder, and SDXL's time ids.

groundset trains one GLIGEN mechanism (frozen UNet, ``fuser`` + ``position_net``) on two
families, so nothing forks the trainer: the family (``arch``) is read from the folder
(a UNet with ``addition_embed_type="text_time"`` and a second text encoder is SDXL; only
the second encoder is SDXL's refiner) and the few places that differ ask it.

SDXL's micro-conditioning ("time ids") tells its UNet each training image's original
size, where the crop was cut and the size it was trained at. The refiner takes an
aesthetic score in place of the target size. Both lay the numbers out as diffusers'
``StableDiffusionXLPipeline._get_add_time_ids`` does: ``(orig_h, orig_w, crop_top,
crop_left, target_h, target_w)``, or ``(orig_h, orig_w, crop_top, crop_left, score)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SD1, SDXL, SDXL_REFINER = "sd1", "sdxl", "sdxl-refiner"
ARCHS = (SD1, SDXL, SDXL_REFINER)
TEXT_TIME = "text_time"
# diffusers' StableDiffusionXLImg2ImgPipeline defaults (the refiner's conditioning)
AESTHETIC_SCORE, NEGATIVE_AESTHETIC_SCORE = 6.0, 2.5


def arch_of_config(unet_config: dict, has_text_encoder: bool, has_text_encoder_2: bool) -> str:
    """The family of a model from its UNet config and which text encoders it ships."""
    if unet_config.get("addition_embed_type") != TEXT_TIME:
        return SD1
    return SDXL if has_text_encoder else SDXL_REFINER


def arch_of_folder(path: str | Path) -> str:
    """The family of a model folder, from ``unet/config.json`` and its text encoder folders.

    A folder whose UNet config cannot be read is called SD 1.x here; ``load_components``
    then reports what is wrong with it.
    """
    path = Path(path)
    try:
        config = json.loads((path / "unet" / "config.json").read_text())
    except (OSError, ValueError):
        return SD1
    if not isinstance(config, dict):
        return SD1
    return arch_of_config(
        config, (path / "text_encoder").is_dir(), (path / "text_encoder_2").is_dir()
    )


def time_id_count(unet_config, pooled_dim: int) -> int:
    """How many numbers a text-time UNet's micro-conditioning takes (6 base, 5 refiner)."""
    extra = int(unet_config.projection_class_embeddings_input_dim) - int(pooled_dim)
    return extra // int(unet_config.addition_time_embed_dim)


def time_ids(original_hw, crop_top_left, target_hw, aesthetic_score=None) -> np.ndarray:
    """``(B, 6)`` SDXL time ids, or ``(B, 5)`` with an aesthetic score (the refiner's).

    All three pairs are ``(height, width)`` / ``(top, left)`` in pixels: the original
    image's size, the crop's top-left corner in the resized image, and the crop's size.
    """
    o = np.atleast_2d(np.asarray(original_hw, np.float64))
    c = np.broadcast_to(np.atleast_2d(np.asarray(crop_top_left, np.float64)), o.shape)
    if aesthetic_score is not None:
        score = np.full((o.shape[0], 1), float(aesthetic_score))
        return np.concatenate([o, c, score], 1).astype(np.float32)
    t = np.broadcast_to(np.atleast_2d(np.asarray(target_hw, np.float64)), o.shape)
    return np.concatenate([o, c, t], 1).astype(np.float32)


def flipped_left(resized_w, left, crop_w):
    """The crop's left edge in the mirrored image: a flipped sample was cut there.

    The mirror of a window at ``left`` in an image ``resized_w`` wide starts at
    ``resized_w - left - crop_w``. diffusers' SDXL training script writes ``crop_w - left``,
    which tells the UNet that an uncropped image (``left == 0``, no slack) was cut a whole
    crop width in: the opposite of what ``crop = (0, 0)`` at sampling asks for.
    """
    return np.asarray(resized_w) - np.asarray(left) - np.asarray(crop_w)
