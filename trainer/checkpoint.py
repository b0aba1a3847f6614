"""Checkpoints of a training run, and the base model it writes.

A checkpoint holds only what resuming needs (trainable weights, optimiser, step, config)
and is refused for a resume whose settings would change the data or noise the run sees,
so a killed run continued equals an uninterrupted one.

A run folder is shared like any dataset, so a checkpoint is untrusted input. It is
``torch.save``'s zip file, but it holds only tensors, numbers, strings, ``None`` and
dicts/lists/tuples of them (the optimiser's and GradScaler's ``state_dict`` are just that),
so it is read with ``torch.load(weights_only=True)``: torch's restricted unpickler, which
refuses any other class or function, so loading one can never run code. Whatever else is
wrong with it (truncated, garbage, another program's file, weights for another model) is
one ``UserError`` line, found before any model is loaded.
"""

from __future__ import annotations

import pickle
import re
import shutil
import warnings
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
FRESH = "pick a new --out (or restore the file) to start over"


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


def read_checkpoint(path: Path, cfg) -> dict:
    """The checkpoint a ``--resume`` continues from, checked before any model is loaded.

    A missing checkpoint is an error rather than a fresh start: the user asked to continue
    a run, and silently training from step 0 would overwrite what they meant to keep.
    """
    if not path.exists():
        raise UserError(
            f"--resume: {path.parent} holds no {CHECKPOINT} to continue from (wrong --out, or "
            "the run stopped before its first checkpoint); run without --resume to start it"
        )
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        call = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"it asks to call {call.group(1)}" if call else "it is not a torch checkpoint"
        raise UserError(
            f"refusing to load {path}: {what}; a groundset checkpoint holds only tensors and "
            f"plain values, and code in a checkpoint is never run; {FRESH}"
        ) from None
    except Exception as e:  # noqa: BLE001 - truncated zip, empty file, ...: torch raises many types
        raise UserError(
            f"cannot read {path} (truncated or not a torch checkpoint: {_first_line(e)}); {FRESH}"
        ) from None
    _check_layout(state, path)
    old, new = state["config"], asdict(cfg)
    changed = [k for k in RESUME_KEYS if old.get(k) != new.get(k)]
    if changed:
        raise UserError(
            f"cannot resume {path.parent}: {', '.join(changed)} differ from the "
            "checkpointed run (the data order would change)"
        )
    return state


def restore_checkpoint(state: dict, path: Path, unet, optimizer, scaler) -> int:
    """Put a checkpoint's weights and optimiser state into this run; return its step.

    Every trainable weight must be there with its shape and finite values: a partial
    restore would leave some weights at their initialisation, and the resumed run would
    no longer equal the uninterrupted one.
    """
    saved = state["trainable"]
    own = {n: p for n, p in unet.named_parameters() if p.requires_grad}
    if set(saved) != set(own):
        extra, lacking = sorted(set(saved) - set(own)), sorted(set(own) - set(saved))
        raise UserError(
            f"{path} does not fit this model: {len(extra)} unknown and {len(lacking)} missing "
            f"trainable tensors (e.g. {(extra or lacking)[0]}); {FRESH}"
        )
    for name, tensor in saved.items():
        if tensor.shape != own[name].shape:
            raise UserError(
                f"{path} does not fit this model: {name} is {tuple(tensor.shape)}, the model's "
                f"is {tuple(own[name].shape)}; {FRESH}"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"{path} holds NaN or infinite values in {name}; {FRESH}")
    unet.load_state_dict(saved, strict=False)
    try:
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
        raise UserError(
            f"{path}: the optimiser state does not fit this run ({_first_line(e)}); {FRESH}"
        ) from None
    return int(state["step"])


def _check_layout(state, path: Path) -> None:
    """The keys and types ``save_checkpoint`` writes; anything else is not our checkpoint."""
    expected = {
        "step": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "config": lambda v: isinstance(v, dict),
        "trainable": lambda v: (
            isinstance(v, dict)
            and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())
        ),
        "optimizer": lambda v: (
            isinstance(v, dict)
            and isinstance(v.get("state"), dict)
            and isinstance(v.get("param_groups"), list)
        ),
        "scaler": lambda v: v is None or isinstance(v, dict),
    }
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a groundset checkpoint (it holds a {type(state).__name__})")
    bad = [k for k, ok in expected.items() if k not in state or not ok(state[k])]
    if bad:
        raise UserError(
            f"{path} is not a groundset checkpoint (missing or malformed: {', '.join(bad)}); {FRESH}"
        )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def save_base_model(unet, comps, out: Path) -> Path:
    """A complete diffusers folder: the source model's parts with the trained UNet."""
    target = out / "model"
    with atomic_output_dir(target) as tmp:
        for item in Path(comps.path).iterdir():
            if item.name != "unet":
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        unet.save_pretrained(tmp / "unet")
    return target
