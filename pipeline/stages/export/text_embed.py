"""CLIP text embeddings of grounding phrases, as GLIGEN stores them.

GLIGEN's ``process_grounding.py`` keeps two features per phrase: ``text_embedding_before``,
the text model's pooled output before the projection (what diffusers'
``StableDiffusionGLIGENPipeline`` feeds its position net: ``text_encoder(...).pooler_output``),
and ``text_embedding_after``, the normalised projected ``text_embeds``. A Stable
Diffusion ``text_encoder/`` folder has no projection, so "after" exists only when the
folder holds one (a full CLIP checkpoint or a ``CLIPTextModelWithProjection``).

Weights are never downloaded: the path must be a local folder in transformers format.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np

from pipeline.core.device import AUTO, resolve_device
from pipeline.core.errors import UserError
from pipeline.core.progress import progress

WHERE = (
    "pass a local folder in transformers format: GLIGEN used openai/clip-vit-large-patch14 "
    "(huggingface.co/openai/clip-vit-large-patch14), or use a Stable Diffusion checkpoint "
    "folder (it holds text_encoder/ and tokenizer/); download it once on a machine with internet"
)
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


def resolve(path: str | Path) -> tuple[Path, Path]:
    """(model folder, tokenizer folder) for a CLIP folder or a diffusers pipeline folder."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"text encoder folder {p} does not exist; {WHERE}")
    if (p / "text_encoder" / "config.json").is_file():
        return p / "text_encoder", p / "tokenizer"
    if not (p / "config.json").is_file():
        raise UserError(
            f"{p} has no config.json, so it is not a transformers model folder; {WHERE}"
        )
    if any((p / f).is_file() for f in _TOKENIZER_FILES):
        return p, p
    if (p.parent / "tokenizer").is_dir():
        return p, p.parent / "tokenizer"
    raise UserError(f"no tokenizer beside the text encoder {p} (looked in it and in ../tokenizer)")


def _text_config(model_dir: Path):
    """The text tower's config; for a full CLIP checkpoint (GLIGEN's
    clip-vit-large-patch14) it carries the top-level ``projection_dim``, which the text
    sub-config alone would get wrong."""
    from transformers import AutoConfig, CLIPConfig

    cfg = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    if isinstance(cfg, CLIPConfig):
        text = cfg.text_config
        text.projection_dim = cfg.projection_dim
        return text
    return cfg


_LOCK = threading.Lock()  # one load, and one batch at a time, per process


@functools.lru_cache(maxsize=1)
def _load(model_dir: Path, tok_dir: Path, stamp: tuple) -> tuple:
    """(tokenizer, model, has_projection, device), loaded once per process and folder
    (``stamp``: its files' sizes and times, so a replaced model is loaded afresh): the
    export embeds each records part's phrases, and a dask worker runs many parts."""
    import transformers
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        model, info = CLIPTextModelWithProjection.from_pretrained(
            model_dir,
            config=_text_config(model_dir),
            local_files_only=True,
            output_loading_info=True,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(
            f"cannot load a CLIP text model from {model_dir}: {e}".splitlines()[0]
        ) from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.utils.logging.enable_progress_bar()
    has_projection = not any("text_projection" in k for k in info.get("missing_keys", []))
    device = resolve_device(AUTO)
    return tokenizer, model.to(device).eval(), has_projection, device


def embed_phrases(phrases: list[str], path: str | Path, batch_size: int = 256) -> dict:
    """Embed unique phrases; returns ``{"before": (n, D) float32, "after": (n, P) | None,
    "model": folder}``. The model is loaded once per process (``_load``), and a
    process's threads (dask's ``threads`` scheduler) take turns: a tokenizer is not
    safe to share between threads at once."""
    model_dir, tok_dir = resolve(path)
    with _LOCK:
        loaded = _load(model_dir, tok_dir, _stamp(model_dir, tok_dir))
        return _embed(phrases, *loaded, model_dir, batch_size)


def _stamp(*folders: Path) -> tuple:
    return tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for d in folders
        for p in sorted(d.iterdir())
        if p.is_file()
    )


def _embed(phrases, tokenizer, model, has_projection, device, model_dir, batch_size) -> dict:
    import torch

    max_len = min(tokenizer.model_max_length, model.config.max_position_embeddings)
    before, after = [], []
    starts = range(0, len(phrases), batch_size)
    with torch.no_grad():
        for s in progress(starts, desc="text embeddings", unit="batch"):
            batch = tokenizer(
                phrases[s : s + batch_size],
                padding=True,
                truncation=True,
                max_length=max_len,
                return_tensors="pt",
            ).to(device)
            out = model.text_model(**batch)
            pooled = out.pooler_output
            before.append(pooled.float().cpu().numpy())
            if has_projection:
                proj = model.text_projection(pooled)
                after.append(torch.nn.functional.normalize(proj, dim=-1).float().cpu().numpy())
    dim = model.config.hidden_size
    return {
        "before": np.concatenate(before) if before else np.zeros((0, dim), np.float32),
        "after": (
            np.concatenate(after)
            if after
            else np.zeros((0, model.config.projection_dim), np.float32)
        )
        if has_projection
        else None,
        "model": str(model_dir),
    }
