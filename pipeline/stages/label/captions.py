"""Captions for detector-labelled images: a user's sidecar file, or one composed from boxes.

GLIGEN trained on detection data (Objects365) that had no captions by composing one from
the object names; groundset does the same in plain English ("a person, a bus and two
cars") so the caption agrees with the grounding phrases. A sidecar (JSONL or CSV with
``file`` and ``caption``) overrides this for the images it names.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.defaults import MAX_CAPTION_CHARS
from pipeline.core.errors import UserError

NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
]
IRREGULAR_PLURALS = {
    "person": "people",
    "man": "men",
    "woman": "women",
    "child": "children",
    "mouse": "mice",
    "knife": "knives",
    "leaf": "leaves",
    "shelf": "shelves",
    "sheep": "sheep",
    "deer": "deer",
    "fish": "fish",
    "skis": "skis",
    "scissors": "scissors",
    "glasses": "glasses",
    "foot": "feet",
    "tooth": "teeth",
    "goose": "geese",
    "ox": "oxen",
    "bus": "buses",
    "tv": "tvs",
}
ARTICLES = ("a ", "an ", "the ", "one ")


def noun_of(phrase: str) -> str:
    """Strip a leading article so "a person" and "person" count as the same thing."""
    p = " ".join(str(phrase).split())
    low = p.lower()
    for art in ARTICLES:
        if low.startswith(art) and len(p) > len(art):
            return p[len(art) :]
    return p


def plural(noun: str) -> str:
    """English plural of the last word ("traffic light" → "traffic lights")."""
    head, _, last = noun.rpartition(" ")
    low = last.lower()
    if low in IRREGULAR_PLURALS:
        word = IRREGULAR_PLURALS[low]
    elif low.endswith(("s", "x", "z", "ch", "sh")):
        word = last + "es"
    elif low.endswith("y") and len(low) > 1 and low[-2] not in "aeiou":
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def with_article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def counted(noun: str, n: int) -> str:
    if n == 1:
        return with_article(noun)
    word = NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)
    return f"{word} {plural(noun)}"


def join_english(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def compose_captions(image_index, phrases, n_images: int) -> list[str]:
    """One caption per image from its boxes' phrases, objects in order of first appearance.

    Counting is a pandas group-by over the flat box columns; string formatting is then
    per distinct (image, noun) pair, so the work does not grow with duplicate boxes.
    Images without boxes get an empty caption.
    """
    idx = np.asarray(image_index, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        return [""] * n_images
    phrases = np.asarray(phrases, dtype=object).reshape(-1)
    uniq, inverse = np.unique(phrases.astype(str), return_inverse=True)
    nouns = np.array([noun_of(u) for u in uniq.tolist()], dtype=object)[inverse]
    df = pd.DataFrame({"image": idx, "noun": nouns, "pos": np.arange(idx.size)})
    g = df.groupby(["image", "noun"], sort=False).agg(n=("pos", "size"), first=("pos", "min"))
    g = g.reset_index().sort_values(["image", "first"], kind="stable")
    g["part"] = [counted(noun, n) for noun, n in zip(g["noun"].tolist(), g["n"].tolist())]
    joined = g.groupby("image", sort=True)["part"].agg(lambda s: join_english(list(s)))
    out = [""] * n_images
    for i, caption in zip(joined.index.tolist(), joined.tolist()):
        out[i] = caption
    return out


def read_sidecar(path: str | Path) -> dict[str, list[str]]:
    """``{file: [captions...]}`` from a JSONL or CSV sidecar (columns ``file``, ``caption``).

    Several lines for one file give several captions, as COCO has five per image. A
    malformed line is a ``UserError`` naming the line, since a silently skipped caption
    file would quietly replace the user's captions with composed ones.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"captions file {p} does not exist (JSONL or CSV with file, caption)")
    rows = _read_csv(p) if p.suffix.lower() == ".csv" else _read_jsonl(p)
    out: dict[str, list[str]] = {}
    for file, caption in rows:
        out.setdefault(file, []).append(caption)
    return out


def _read_jsonl(p: Path):
    rows = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise UserError(f"{p}:{n}: not valid JSON ({e})") from None
            except RecursionError:
                raise UserError(f"{p}:{n}: not a caption row (nested too deeply)") from None
            rows.append(_row(obj, p, n))
    return rows


def _read_csv(p: Path):
    with open(p, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
            raise UserError(f"{p}: CSV needs a header with 'file' and 'caption' columns")
        return [_row(r, p, n) for n, r in enumerate(reader, 2)]


def _row(obj, p: Path, n: int) -> tuple[str, str]:
    if not isinstance(obj, dict):
        raise UserError(f"{p}:{n}: expected an object with 'file' and 'caption'")
    file, caption = obj.get("file"), obj.get("caption")
    if not isinstance(file, str) or not file or not isinstance(caption, str):
        raise UserError(f"{p}:{n}: needs string fields 'file' and 'caption'")
    if len(caption) > MAX_CAPTION_CHARS:
        raise UserError(
            f"{p}:{n}: a caption of {len(caption)} characters, over the limit of "
            f"{MAX_CAPTION_CHARS} (see docs/limits.md)"
        )
    return file.replace("\\", "/"), caption
