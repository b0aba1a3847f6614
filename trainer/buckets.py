"""Aspect-ratio buckets and the deterministic batch order built on them.

SDXL trains on several aspect ratios of about equal pixel count, and draws each batch
from one bucket so its tensors stack without padding or heavy cropping. The batch order
here is a pure function of ``(seed, batch index)``: a run killed at any step and
resumed sees exactly the batches it would have seen, with no sampler state to save.
"""

from __future__ import annotations

import numpy as np


def make_buckets(resolution: int, multiple: int, max_ratio: float = 2.0) -> np.ndarray:
    """``(K, 2)`` int array of ``(width, height)`` with ``width*height <= resolution**2``.

    Sides are multiples of ``multiple`` (the VAE's and UNet's joint downsampling, so that
    every latent divides evenly); aspect ratios stay within ``[1/max_ratio, max_ratio]``.
    The square bucket ``resolution x resolution`` is always present.
    """
    if resolution % multiple:
        raise ValueError(f"resolution {resolution} is not a multiple of {multiple}")
    area = resolution * resolution
    widths = np.arange(multiple, int(resolution * max_ratio) + 1, multiple)
    heights = (area // widths) // multiple * multiple
    ok = (heights > 0) & (widths / np.maximum(heights, 1) <= max_ratio)
    ok &= heights / widths <= max_ratio
    pairs = {(int(w), int(h)) for w, h in zip(widths[ok], heights[ok])}
    pairs.add((resolution, resolution))
    return np.array(sorted(pairs, key=lambda p: p[0] / p[1]), dtype=np.int64)


# SDXL's multi-aspect buckets at its 1024^2 pixel budget, (height, width) with height <
# width (Podell et al. 2023, "SDXL", appendix: 64-px steps, aspect ratios 1/4 to 4); the
# square and the mirror image of each complete the 41 buckets
SDXL_BUCKETS_1024 = (
    (512, 2048), (512, 1984), (512, 1920), (512, 1856), (576, 1792), (576, 1728),
    (576, 1664), (640, 1600), (640, 1536), (704, 1472), (704, 1408), (704, 1344),
    (768, 1344), (768, 1280), (832, 1216), (832, 1152), (896, 1152), (896, 1088),
    (960, 1088), (960, 1024),
)  # fmt: skip


def sdxl_buckets(resolution: int, multiple: int) -> np.ndarray:
    """SDXL's bucket set scaled to a ``resolution**2`` budget, as ``(K, 2)`` ``(width, height)``.

    At 1024 it is SDXL's own list. A smaller model (the tiny SDXL, 128 px) gets the
    same aspect ratios at a proportionally small budget: each side scaled by
    ``resolution / 1024`` and rounded down to ``multiple``; buckets that coincide after
    rounding are kept once.
    """
    if resolution % multiple:
        raise ValueError(f"resolution {resolution} is not a multiple of {multiple}")
    half = np.asarray(SDXL_BUCKETS_1024, np.float64) * resolution / 1024
    half = np.maximum(half // multiple * multiple, multiple).astype(np.int64)
    pairs = {(int(w), int(h)) for h, w in half} | {(int(h), int(w)) for h, w in half}
    pairs.add((resolution, resolution))
    return np.array(sorted(pairs, key=lambda p: (p[0] / p[1], p[0])), dtype=np.int64)


def buckets_for(arch: str, resolution: int, multiple: int) -> np.ndarray:
    """The bucket set a model family trains on: SDXL's list, or ``make_buckets`` for SD 1.x."""
    from trainer.arch import SD1

    if arch == SD1:
        return make_buckets(resolution, multiple)
    return sdxl_buckets(resolution, multiple)


def assign_buckets(width, height, buckets: np.ndarray) -> np.ndarray:
    """Index of the bucket whose aspect ratio is closest (in log space) to each image's."""
    ratio = np.log(np.asarray(width, np.float64) / np.asarray(height, np.float64))
    bucket_ratio = np.log(buckets[:, 0] / buckets[:, 1])
    return np.abs(ratio[:, None] - bucket_ratio[None, :]).argmin(1).astype(np.int64)


class BatchOrder:
    """Infinite, reproducible stream of batches, each drawn from a single bucket.

    Each epoch shuffles the images (or, with ``weights``, draws as many images with
    replacement in proportion to their weight, so down-weighted grid-like images are
    seen less), groups them by bucket, cuts batches and shuffles the batches.
    ``batch(k)`` returns the k-th batch of the whole run.
    """

    def __init__(self, bucket_of, batch_size: int, seed: int = 0, weights=None):
        self.bucket_of = np.asarray(bucket_of, np.int64)
        if self.bucket_of.size == 0:
            raise ValueError("no samples to draw batches from")
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        self.batch_size = batch_size
        self.seed = seed
        self.p = None
        if weights is not None:
            w = np.asarray(weights, np.float64)
            if w.shape != self.bucket_of.shape or (w < 0).any() or not np.isfinite(w).all():
                raise ValueError("weights must be finite, non-negative, one per sample")
            if w.sum() <= 0:
                raise ValueError("all sampling weights are zero")
            self.p = w / w.sum()
        self._epochs: list[list[np.ndarray]] = []
        self._starts: list[int] = [0]

    def epoch(self, e: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, e])
        n = self.bucket_of.size
        idx = rng.permutation(n) if self.p is None else rng.choice(n, size=n, p=self.p)
        idx = idx[np.argsort(self.bucket_of[idx], kind="stable")]
        cuts = np.flatnonzero(np.diff(self.bucket_of[idx])) + 1
        batches = []
        for group in np.split(idx, cuts):
            batches.extend(np.split(group, range(self.batch_size, group.size, self.batch_size)))
        return [batches[i] for i in rng.permutation(len(batches))]

    def locate(self, k: int) -> tuple[int, int]:
        """(epoch, position within it) of global batch ``k``; epochs are built lazily."""
        while self._starts[-1] <= k:
            e = len(self._epochs)
            self._epochs.append(self.epoch(e))
            self._starts.append(self._starts[-1] + len(self._epochs[-1]))
        e = int(np.searchsorted(self._starts, k, side="right")) - 1
        # Keep memory bounded on long runs: an old epoch is rebuilt if ever needed again.
        for old in range(max(0, e - 2)):
            self._epochs[old] = []
        if not self._epochs[e]:
            self._epochs[e] = self.epoch(e)
        return e, k - self._starts[e]

    def batch(self, k: int) -> np.ndarray:
        e, i = self.locate(k)
        return self._epochs[e][i]
