"""Shapes, layouts and pixels of the demo world.

The demo exists so that ``dvc repro`` can run the whole mission offline in minutes on a
CPU, so the world is built for *speed of learning*: a handful of large, flat-coloured
shapes on a plain background, a fixed four-phrase vocabulary, and boxes that are exact
by construction (every shape's outline is scaled to touch all four sides of its box).
Everything is drawn from a seeded NumPy generator, and PNGs are written with fixed
parameters and no metadata, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# (phrase, RGB); the phrase is the COCO category name, so ingest makes it the box phrase.
VOCABULARY = (
    ("red circle", (220, 40, 40)),
    ("blue square", (40, 80, 220)),
    ("green triangle", (30, 160, 60)),
    ("yellow star", (235, 195, 20)),
)
SHAPES = ("circle", "square", "triangle", "star")
SUPERSAMPLE = 4  # drawn 4x larger then box-filtered down: anti-aliased yet deterministic
CIRCLE_VERTICES = 24  # segmentation polygon of a circle, as COCO stores outlines


def _unit_star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    xy = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    return _fit_unit_box(xy)


def _fit_unit_box(xy: np.ndarray) -> np.ndarray:
    """Scale a polygon per axis so its extent is exactly [-1, 1] x [-1, 1]."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return (xy - lo) / (hi - lo) * 2.0 - 1.0


_UNIT_OUTLINES = {
    "circle": np.stack(
        [
            np.cos(np.linspace(0, 2 * np.pi, CIRCLE_VERTICES, endpoint=False)),
            np.sin(np.linspace(0, 2 * np.pi, CIRCLE_VERTICES, endpoint=False)),
        ],
        axis=1,
    ),
    "square": np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]),
    "triangle": np.array([[0.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]),
    "star": _unit_star(),
}


def outline(category: int, box: np.ndarray) -> np.ndarray:
    """The polygon (k, 2) of a shape of ``category`` filling pixel box ``x0,y0,x1,y1``."""
    unit = _UNIT_OUTLINES[SHAPES[category]]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
    return unit * np.array([hw, hh]) + np.array([cx, cy])


def polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


@dataclass
class Scene:
    """One image's content: pixel boxes (n, 4) xyxy, category indices, background tiles.

    ``tiles`` lists (x0, y0, x1, y1, grey) rectangles painted before the shapes; a
    natural scene has one tile covering the image, a mosaic one tile per cell.
    """

    boxes: np.ndarray
    categories: np.ndarray
    tiles: list


def _non_overlapping(rng, n, size, smin, smax, max_iou, tries=60):
    """Sample up to ``n`` square boxes in a ``size`` frame with pairwise IoU <= max_iou.

    Sides are log-uniform in [smin, smax] * size and half the scenes cluster their
    objects around one point, because natural photos mix scales and group objects; equal
    sizes spread evenly would read as a lattice to the audit.
    """
    boxes = np.zeros((0, 4))
    clustered = rng.random() < 0.5
    centre = rng.uniform(0.25, 0.75, 2) * size
    for _ in range(n):
        for _ in range(tries):
            s = np.exp(rng.uniform(np.log(smin), np.log(smax))) * size
            if clustered:
                xy = centre + rng.normal(0, 0.22 * size, 2) - s / 2
            else:
                xy = rng.uniform(0, size - s, 2)
            x0, y0 = np.clip(xy, 0, size - s)
            cand = np.array([x0, y0, x0 + s, y0 + s])
            if not len(boxes) or _iou(cand, boxes).max() <= max_iou:
                boxes = np.vstack([boxes, cand])
                break
    return boxes


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area(box) + area(boxes) - inter)


# Object count distribution of natural scenes, and each count's size range (fraction of
# the image side). Crowded scenes get smaller objects so that four or five objects can
# sit anywhere, not only in the four quadrants (which would look like a 2x2 lattice).
NATURAL_COUNTS = (1, 2, 3, 4, 5)
NATURAL_COUNT_P = (0.2, 0.3, 0.25, 0.15, 0.1)
NATURAL_SIZES = {1: (0.3, 0.6), 2: (0.22, 0.5), 3: (0.16, 0.45), 4: (0.12, 0.4), 5: (0.1, 0.38)}


def natural_boxes(rng, size: float, counts=NATURAL_COUNTS, p=NATURAL_COUNT_P) -> np.ndarray:
    n = int(rng.choice(counts, p=p))
    smin, smax = NATURAL_SIZES[min(n, max(NATURAL_SIZES))]
    return _non_overlapping(rng, n, size, smin, smax, max_iou=0.1)


def _grey(rng) -> int:
    return int(rng.integers(105, 160))


def natural_scene(rng, size: int) -> Scene:
    boxes = natural_boxes(rng, size)
    cats = rng.integers(0, len(VOCABULARY), len(boxes))
    return Scene(boxes, cats, [(0, 0, size, size, _grey(rng))])


def lattice_scene(rng, size: int) -> Scene:
    """An r x c lattice of same-size objects, jittered, with some cells left empty."""
    rows, cols = (int(v) for v in rng.choice([2, 3], 2))
    cw, ch = size / cols, size / rows
    s = rng.uniform(0.55, 0.75) * min(cw, ch)
    r, c = np.divmod(np.arange(rows * cols), cols)
    keep = rng.random(rows * cols) >= 0.1
    keep[rng.integers(0, rows * cols)] = True
    jitter = rng.uniform(-0.08, 0.08, (rows * cols, 2)) * np.array([cw, ch])
    cx = (c + 0.5) * cw + jitter[:, 0]
    cy = (r + 0.5) * ch + jitter[:, 1]
    boxes = np.stack([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], axis=1)[keep]
    same = rng.random() < 0.5  # shelves often repeat one product; boards mix pieces
    cats = (
        np.full(len(boxes), rng.integers(0, len(VOCABULARY)))
        if same
        else rng.integers(0, len(VOCABULARY), len(boxes))
    )
    return Scene(boxes, cats, [(0, 0, size, size, _grey(rng))])


def mosaic_scene(rng, size: int) -> Scene:
    """A 2x2 or 3x3 collage: every tile is a small natural scene with its own background."""
    k = int(rng.choice([2, 3]))
    tile = size / k
    boxes, cats, tiles = [], [], []
    for i in range(k * k):
        oy, ox = divmod(i, k)
        b = natural_boxes(rng, tile, counts=(1, 2, 3), p=(0.4, 0.4, 0.2))
        boxes.append(b + np.array([ox, oy, ox, oy]) * tile)
        cats.append(rng.integers(0, len(VOCABULARY), len(b)))
        tiles.append((ox * tile, oy * tile, (ox + 1) * tile, (oy + 1) * tile, _grey(rng)))
    return Scene(np.vstack(boxes), np.concatenate(cats), tiles)


# Light falls across every demo scene: red rises left to right and blue top to bottom,
# by LIGHT levels each (of 255). The base model has to draw this ramp from pure noise, so its
# frozen features must encode where in the frame they are. Without that, a UNet's
# features carry almost no absolute position (zero padding only), and the gated adapters
# would have nothing to match the boxes against.
LIGHT = 60


def background(tiles, size: int, scale: int = 1) -> np.ndarray:
    """The (H, W, 3) uint8 background: grey tiles plus the light ramp."""
    n = size * scale
    img = np.zeros((n, n, 3), np.float64)
    for x0, y0, x1, y1, g in tiles:
        c0, r0, c1, r1 = np.rint(np.array([x0, y0, x1, y1], float) * scale).astype(int)
        img[r0:r1, c0:c1] = g
    ramp = (np.arange(n) + 0.5) / n - 0.5
    img[:, :, 0] += LIGHT * ramp[None, :]
    img[:, :, 2] += LIGHT * ramp[:, None]
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def render(scene: Scene, size: int) -> Image.Image:
    ss = SUPERSAMPLE
    img = Image.fromarray(background(scene.tiles, size, ss), "RGB")
    draw = ImageDraw.Draw(img)
    for box, cat in zip(scene.boxes, scene.categories):
        colour = VOCABULARY[int(cat)][1]
        if SHAPES[int(cat)] == "circle":
            draw.ellipse(list(box * ss), fill=colour)
        else:
            draw.polygon([tuple(p) for p in outline(int(cat), box) * ss], fill=colour)
    return img.resize((size, size), Image.Resampling.BOX)


def png_bytes(img: Image.Image) -> bytes:
    """PNG with fixed zlib settings and no text chunks, so bytes depend only on pixels."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()
