"""Class name → grounding phrase.

A detector speaks in class names ("tv", "hair drier"); GLIGEN's grounding tokens are
phrases embedded by the text encoder, so a user may want "a television" instead. The
map is a small YAML/JSON file (``person: a person``). Classes it does not name keep
their class name as phrase, which is what GLIGEN itself did for detection data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from pipeline.core.errors import UserError


def load_phrase_map(path: str | Path | None) -> dict[str, str]:
    """Read ``{class name: phrase}`` from a YAML or JSON file; ``None`` gives an empty map."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise UserError(f"phrase map {p} does not exist (a YAML file of 'class: phrase' lines)")
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"phrase map {p} cannot be parsed: {reason}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"phrase map {p} must be a mapping of class name to phrase")
    out = {}
    for k, v in data.items():
        if not isinstance(v, str) or not v.strip():
            raise UserError(f"phrase map {p}: phrase for {k!r} must be a non-empty string")
        out[str(k)] = " ".join(v.split())
    return out


def check_known(mapping: dict[str, str], class_names: list[str], path=None) -> None:
    """A key that names no class of the model is almost always a typo; say so up front."""
    unknown = sorted(set(mapping) - set(class_names))
    if unknown:
        where = f" in {path}" if path else ""
        raise UserError(
            f"phrase map{where} names classes the detector does not have: {', '.join(unknown)}"
        )


def to_phrases(class_names, mapping: dict[str, str]) -> np.ndarray:
    """Map a column of class names to phrases (work is per distinct name, not per box)."""
    arr = np.asarray(class_names, dtype=object).reshape(-1)
    if arr.size == 0:
        return arr
    uniq, inverse = np.unique(arr.astype(str), return_inverse=True)
    mapped = np.array([mapping.get(u, u) for u in uniq.tolist()], dtype=object)
    return mapped[inverse]
