"""Image-space tiling score: does a generated image look cut into a grid of tiles?

A GLIGEN model that learned a grid prior splits its images into tiles, one object per
tile. Two traces of that are visible in the pixels alone, without any detector:

* **straight seams**: a tile border is a discontinuity along a *whole* row or column.
  Natural edges (a pole, a horizon) are long too, but rarely cross the full image in
  both directions, and JPEG/VAE 8-px blocks are weak. We measure, for each column
  boundary, the share of rows where the step across it clearly exceeds the steps just
  beside it; the best vertical and best horizontal seam are combined with a geometric
  mean, so a lone horizon does not count as a grid.
* **periodic peaks**: repeated or regularly spaced tiles put isolated peaks on a lattice
  of the 2D power spectrum at multiples of the tile count k (2..8 tiles per side). We
  take, for each k, the median prominence of the lattice points over their
  neighbourhood; the 8-px block artefacts of JPEG and latent decoders sit at much
  higher frequencies than 8 tiles per side and are never looked at.

Each part is mapped to [0, 1] and the score is their maximum, so either trace alone is
enough. Images are resized to one square working size and scored as a NumPy batch.
"""

from __future__ import annotations

import numpy as np

WORK_SIZE = 256  # pixels per side the images are scored at
MAX_TILES = 8  # tiles per side considered for periodicity
BORDER = 0.06  # fraction of the side ignored at the image border (frames, padding)
SEAM_RATIO = 2.0  # a row "sees" a seam when the step is this many times its neighbours'
SEAM_FLOOR = 4.0  # ... and larger than this many grey levels (ignores flat regions)
# Calibrated on coco128 val2017 (natural) against 2x2/3x3 mosaics of the same photos:
SEAM_NATURAL = 0.3  # about the 95th percentile of natural photos' best row x column seam
SEAM_FULL = 0.6  # most mosaics of distinct photos reach this
PEAK_NATURAL = 2.0  # natural photos stay below about 1.4 (log-prominence)
PEAK_FULL = 6.0  # repeated tiles reach 13 and more


def to_gray_batch(images, size: int = WORK_SIZE) -> np.ndarray:
    """Stack RGB uint8 images (any sizes) into a float32 (B, size, size) grey batch."""
    from PIL import Image

    out = np.empty((len(images), size, size), dtype=np.float32)
    for i, im in enumerate(images):
        pil = im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, dtype=np.uint8))
        out[i] = np.asarray(pil.convert("L").resize((size, size), Image.BILINEAR), dtype=np.float32)
    return out


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def seam_profile(gray: np.ndarray, span: int = 2, off: tuple = (4, 5)) -> np.ndarray:
    """Share of rows, per column boundary, where the step across it stands out: (B, W-1).

    The step is taken over ``2*span`` pixels so that a seam softened by resampling is
    still one step, and compared to the same steps ``off`` pixels to either side, so
    texture (steps everywhere) does not stand out while a lone seam does.
    """
    w = gray.shape[2]
    pad = np.pad(gray, ((0, 0), (0, 0), (span - 1, span)), mode="edge")
    d = np.abs(pad[:, :, 2 * span - 1 : 2 * span + w - 2] - pad[:, :, : w - 1])
    o = max(off)
    dp = np.pad(d, ((0, 0), (0, 0), (o, o)), mode="edge")
    n = d.shape[2]
    neigh = np.maximum.reduce([dp[:, :, o + s * k : o + s * k + n] for k in off for s in (-1, 1)])
    hit = (d > SEAM_RATIO * neigh) & (d > SEAM_FLOOR)
    share = hit.mean(axis=1)
    b = max(1, round(BORDER * n))
    share[:, :b] = 0.0
    share[:, -b:] = 0.0
    return share


def seam_score(gray: np.ndarray) -> np.ndarray:
    """Strength of full-length straight seams in both directions, in [0, 1] per image."""
    cols = seam_profile(gray).max(axis=1)
    rows = seam_profile(np.swapaxes(gray, 1, 2)).max(axis=1)
    return _ramp(np.sqrt(cols * rows), SEAM_NATURAL, SEAM_FULL)


def periodic_peaks(gray: np.ndarray, max_tiles: int = MAX_TILES) -> np.ndarray:
    """Median log-prominence of the spectral lattice of k tiles per side, best k: (B,).

    The lattice is the first two harmonics of k in each direction, where the energy of
    a tiling lives. A point's prominence is its power over the median power of the bins
    one and two steps around it; natural images, whose spectrum falls off smoothly, give
    about e^1 at most, repeated tiles give e^10 and more.
    """
    x = gray - gray.mean(axis=(1, 2), keepdims=True)
    p = np.abs(np.fft.fft2(x)) ** 2 + 1e-6
    size = gray.shape[1]
    ring = [(du, dv) for du in range(-2, 3) for dv in range(-2, 3) if (du, dv) != (0, 0)]
    best = np.full(len(gray), -np.inf)
    for k in range(2, max_tiles + 1):
        a, b = np.meshgrid(np.arange(0, 3), np.arange(-2, 3), indexing="ij")
        keep = (a > 0) | (b > 0)  # half-plane: the spectrum of a real image is symmetric
        u, v = a[keep] * k, b[keep] * k
        peak = p[:, u % size, v % size]
        bg = np.median([p[:, (u + du) % size, (v + dv) % size] for du, dv in ring], axis=0)
        best = np.maximum(best, np.median(np.log(peak / bg), axis=1))
    return best


def periodic_score(gray: np.ndarray) -> np.ndarray:
    return _ramp(periodic_peaks(gray), PEAK_NATURAL, PEAK_FULL)


def tiling_scores(images, size: int = WORK_SIZE) -> dict:
    """Per-image ``seam``, ``periodic`` and combined ``tiling`` scores, each in [0, 1]."""
    gray = (
        images
        if isinstance(images, np.ndarray) and images.ndim == 3
        else to_gray_batch(images, size)
    )
    if len(gray) == 0:
        z = np.zeros(0)
        return {"seam": z, "periodic": z, "tiling": z}
    seam = seam_score(gray)
    per = periodic_score(gray)
    return {"seam": seam, "periodic": per, "tiling": np.maximum(seam, per)}


def tiling_score(images, size: int = WORK_SIZE) -> np.ndarray:
    return tiling_scores(images, size)["tiling"]
