"""Checkpoints of a training run, and the base model it writes.

A checkpoint holds only what resuming needs (trainable weights, optimiser, step, config)
and is refused for a resume whose settings would change the data or noise the run sees,
so a killed run continued equals an uninterrupted one.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from pipeline.core.atomic import atomic_output_dir, atomic_path
from pipeline.core.errors import UserError

CHECKPOINT = "checkpoint.pt"
# Changing these between a run and its resume would change the data or noise it sees.
RESUME_KEYS = (
    "model",
    "data",
    "mode",
    "batch_size",
    "grad_accum",
    "seed",
    "resolution",
    "caption_drop",
    "grounding_drop",
    "weights",
    "timestep_bias",
    "timestep_bias_multiplier",
    "timestep_bias_portion",
)


def save_checkpoint(path: Path, unet, optimizer, scaler, step: int, cfg) -> None:
    """Trainable weights + optimiser + step, written to a temporary name and renamed."""
    state = {
        "step": step,
        "config": asdict(cfg),
        "trainable": {n: p.detach().cpu() for n, p in unet.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, unet, optimizer, scaler, cfg) -> int:
    state = torch.load(path, map_location="cpu", weights_only=False)
    old = state["config"]
    changed = [k for k in RESUME_KEYS if old.get(k) != asdict(cfg).get(k)]
    if changed:
        raise UserError(
            f"cannot resume {path.parent}: {', '.join(changed)} differ from the "
            "checkpointed run (the data order would change)"
        )
    missing = unet.load_state_dict(state["trainable"], strict=False).unexpected_keys
    assert not missing, f"checkpoint has unknown weights: {missing[:3]}"
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    return int(state["step"])


def save_base_model(unet, comps, out: Path) -> Path:
    """A complete diffusers folder: the source model's parts with the trained UNet."""
    target = out / "model"
    with atomic_output_dir(target) as tmp:
        for item in Path(comps.path).iterdir():
            if item.name != "unet":
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        unet.save_pretrained(tmp / "unet")
    return target
