"""The audit's pixel check: does a training image look tiled, whatever its boxes say?

A 2x2 collage of four single-object photos has four boxes and nothing regular about
them, so the layout statistics cannot tell it from a photo. Its pixels can: the image
tiling score ``evaluate`` already uses on generated images (``analysis.image_grid``:
full-length straight seams, periodic spectral peaks) separates such composites from
the photos they were made of. Here that score becomes a grid-score family, ``pixels``,
a logistic of the two parts fitted on composites of the coco128 *train* photos against
those photos, and checked on composites of the *val* photos (``python -m
analysis.pixel_fit ../shared/data`` refits and prints both).

Images are decoded at a reduced size when the format allows it (JPEG draft mode), then
scored as a NumPy batch at ``image_grid.WORK_SIZE``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.image_grid import WORK_SIZE, tiling_scores

# bias and weight on image_grid's ``tiling`` score (the larger of its seam and periodic
# parts), fitted on coco128 train; the bias is then moved so that 1% of those photos
# reach the audit's default threshold: photos are most of a dataset, composites few.
PIXEL_WEIGHTS = (-3.71, {"tiling": 5.71})
FALSE_ALARMS = 0.01


def pixel_score(parts: dict) -> np.ndarray:
    """The ``pixels`` family score in [0, 1] from ``tiling_scores``' parts."""
    bias, ws = PIXEL_WEIGHTS
    z = bias + sum(w * np.asarray(parts[k], float) for k, w in ws.items())
    return 1.0 / (1.0 + np.exp(-z))


def load_gray(path: Path, size: int = WORK_SIZE) -> np.ndarray | None:
    """A grey ``size`` x ``size`` float32 image, or None if the file is not a usable image.
    JPEGs are decoded at the smallest scale still at least ``size`` (draft mode)."""
    from PIL import Image

    from pipeline.core.images import ImageReject, load_image

    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (size, size))
                im = im.convert("L").resize((size, size), Image.BILINEAR)
                return np.asarray(im, np.float32)
    except OSError:
        return None
    try:
        rgb = load_image(path)
    except ImageReject:
        return None
    im = Image.fromarray(rgb).convert("L").resize((size, size), Image.BILINEAR)
    return np.asarray(im, np.float32)


def score_files(paths: list, batch: int = 64) -> np.ndarray:
    """``pixels`` score per path (NaN where the path is None or not an image)."""
    out = np.full(len(paths), np.nan)
    for start in range(0, len(paths), batch):
        grays, where = [], []
        for k in range(start, min(start + batch, len(paths))):
            g = load_gray(paths[k]) if paths[k] is not None else None
            if g is not None:
                grays.append(g)
                where.append(k)
        if grays:
            out[where] = pixel_score(tiling_scores(np.stack(grays)))
    return out


def composites(photos: list, n: int, seed: int, size: int = 480) -> list:
    """``n`` collages (alternately 2x2 and 3x3) of distinct photos, each resized to its
    tile: the composites the pixel check must catch."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = 2 if i % 2 == 0 else 3
        t = size // k
        canvas = Image.new("RGB", (t * k, t * k))
        for j, p in enumerate(rng.choice(len(photos), k * k, replace=False)):
            canvas.paste(photos[p].resize((t, t)), ((j % k) * t, (j // k) * t))
        out.append(canvas)
    return out
