"""The audit report's galleries: the worst images as box layouts beside the photos.

A reviewer trusts (or overrules) a verdict by looking at the images it blames, so each
entry is drawn twice: its boxes on a blank canvas (what the score saw) and, when the
image file is found under its source's images root, a thumbnail of the photo with the
same boxes on it. Files are only read inside their source's root (a ``file`` that
climbs out with ``..`` or a symlink leading elsewhere is not opened), and an image
that cannot be read is drawn as a note, never an error: the report is a side output.
"""

from __future__ import annotations

import base64
import html
import io
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

CELL = 180  # pixels per drawing: readable at the page's width, 5 pairs would not fit
PAD, HEAD = 14, 36
BLUE, GREY, INK, ORANGE = (31, 119, 180), (150, 150, 150), (30, 30, 30), (255, 127, 14)


@dataclass
class Entry:
    """One image the report draws: its score, id, source, file and normalised boxes."""

    score: float
    image_id: str
    source: str
    file: str | None
    boxes: np.ndarray  # (n, 4) xyxy in [0, 1]
    family: str = ""


def safe_path(root: str | Path | None, file: str | None) -> Path | None:
    """``root / file`` if it is an existing file inside ``root`` (symlinks resolved)."""
    if not root or not file:
        return None
    base = Path(root).resolve()
    path = (base / file).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path


@cache
def font(size: int):
    """Pillow's default font at ``size`` px, loaded once (the report draws 12-14 px)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _photo(path: Path | None, boxes: np.ndarray, size: int):
    """The photo scaled to fit ``size`` with its boxes drawn, or None if unavailable."""
    if path is None:
        return None
    from PIL import Image, ImageDraw

    from pipeline.core.images import ImageReject, load_image

    try:
        im = Image.fromarray(load_image(path))
    except ImageReject:
        return None
    im.thumbnail((size, size), Image.BILINEAR)
    draw = ImageDraw.Draw(im)
    w, h = im.size
    for a, b, c, d in np.clip(boxes, 0, 1) * [w, h, w, h]:
        draw.rectangle([a, b, max(c, a + 1), max(d, b + 1)], outline=ORANGE, width=2)
    return im


def _layout(draw, ox: int, oy: int, boxes: np.ndarray, w: int, h: int) -> None:
    """The boxes on a blank frame of the photo's shape (square when it is unknown)."""
    draw.rectangle([ox, oy, ox + w, oy + h], outline=GREY)
    for a, b, c, d in np.clip(boxes, 0, 1) * [w, h, w, h]:
        draw.rectangle([ox + a, oy + b, ox + max(c, a + 1), oy + max(d, b + 1)], outline=BLUE)


def _note(text: str, face):
    """``text`` in grey on white, drawn once and pasted wherever it recurs: FreeType takes
    about 14 us a glyph, and a gallery without its photos repeats this note 28 times
    (10 ms of the report). On the gallery's white the pixels are the same."""
    from PIL import Image, ImageDraw

    *_, right, bottom = face.getbbox(text)
    patch = Image.new("RGB", (right, bottom), "white")
    ImageDraw.Draw(patch).text((0, 0), text, fill=GREY, font=face)
    return patch


def gallery(entries: list[Entry], roots: dict, per_row: int = 2):
    """A PIL image: ``per_row`` entries to a row, each a layout drawing and, when the file
    is available, the photo beside it. Returns (image, photos drawn)."""
    from PIL import Image, ImageDraw

    n_rows = int(np.ceil(len(entries) / per_row))
    pair = 2 * CELL + PAD
    img = Image.new(
        "RGB", (per_row * (pair + 2 * PAD) + PAD, n_rows * (CELL + HEAD + PAD) + PAD), "white"
    )
    draw = ImageDraw.Draw(img)
    big, small = font(13), font(12)
    shown, missing = 0, None
    for k, e in enumerate(entries):
        ox = PAD + (k % per_row) * (pair + 2 * PAD)
        oy = PAD + (k // per_row) * (CELL + HEAD + PAD) + HEAD
        fam = f" ({e.family})" if e.family else ""
        draw.text((ox, oy - HEAD), f"{e.image_id[-40:]}", fill=INK, font=big)
        draw.text(
            (ox, oy - HEAD + 17), f"{e.source[:24]}: score {e.score:.2f}{fam}", fill=INK, font=small
        )
        photo = _photo(safe_path(roots.get(e.source), e.file), e.boxes, CELL)
        _layout(draw, ox, oy, e.boxes, *(photo.size if photo is not None else (CELL, CELL)))
        px = ox + CELL + PAD
        if photo is None:
            draw.rectangle([px, oy, px + CELL, oy + CELL], outline=GREY)
            missing = missing or _note("image not available", small)
            img.paste(missing, (px + 8, oy + CELL // 2 - 8))
        else:
            img.paste(photo, (px, oy))
            shown += 1
    return img, shown


def _img_tag(img) -> str:
    """zlib level 1: a third of the default level's encode time (the report's largest
    fixed cost, 0.07 s of a 1.3 s audit) for figures about 1.5x larger."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return (
        f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
    )


class _Figures:
    """Figures encoded on two threads while the page goes on being drawn: Pillow drops
    the GIL while it encodes, and the encoding was half of the report's time (one
    thread kept the page waiting for it: 0.07 s against 0.058 s for the bench's report,
    median of 4). Each figure stands in the page as a placeholder until ``fill``."""

    def __init__(self, pool):
        self.pool, self.tags = pool, []

    def add(self, img) -> str:
        self.tags.append(self.pool.submit(_img_tag, img))
        return f"\0figure {len(self.tags) - 1}\0"

    def fill(self, page: str) -> str:
        for k, tag in enumerate(self.tags):
            page = page.replace(f"\0figure {k}\0", tag.result(), 1)
        return page


_FIGURES: ContextVar[_Figures | None] = ContextVar("figures", default=None)


@contextmanager
def figures_encoded_aside():
    """Within it, ``png`` returns placeholders and encodes on threads; ``fill`` the page
    with the yielded object before leaving."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        figures = _Figures(pool)
        token = _FIGURES.set(figures)
        try:
            yield figures
        finally:
            _FIGURES.reset(token)


def png(img) -> str:
    """An inline ``<img>`` of a PIL image: the page carries every figure itself."""
    figures = _FIGURES.get()
    return _img_tag(img) if figures is None else figures.add(img)


def worst_gallery(sample, worst: list[dict], roots: dict) -> str:
    """The worst images: each as its box layout and, when available, the photo."""
    entries = sample.worst_entries(worst)
    if not entries:
        return "<p>No grid-like images.</p>"
    img, shown = gallery(entries, roots)
    note = f"<p>{shown} of {len(entries)} photos found under their source's images root.</p>"
    return note + png(img)


def source_galleries(sample, roots: dict, max_sources: int = 12) -> str:
    """Each source's highest-scoring images, so a source's verdict can be checked on its
    own examples (the first ``max_sources`` sources by name)."""
    parts = []
    for src in sorted(sample.by_source)[:max_sources]:
        entries = [Entry(-b[0], b[2], b[4], b[5], b[3]) for b in sample.by_source[src]]
        if entries:
            parts.append(f"<h3>{html.escape(src)}</h3>" + png(gallery(entries, roots)[0]))
    return "".join(parts) or "<p>No images.</p>"
