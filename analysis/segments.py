"""Segment operations over flattened per-image box arrays.

Every image's boxes sit contiguously in flat arrays, delimited by ``offsets`` (Arrow's
list offsets). Per-image statistics then become ``ufunc.reduceat`` over those segments
and within-image pairwise work becomes a flat list of (i, j) pairs, so a million images
cost a handful of NumPy calls instead of a million Python iterations.
"""

from __future__ import annotations

import numpy as np


def owner_index(offsets: np.ndarray) -> np.ndarray:
    """Image index of every flattened box."""
    counts = np.diff(offsets)
    return np.repeat(np.arange(counts.size), counts)


def seg_reduce(ufunc, values: np.ndarray, offsets: np.ndarray, empty=0.0) -> np.ndarray:
    """``ufunc.reduceat`` over segments, with ``empty`` for zero-length segments.

    Plain ``reduceat`` returns the *next* element for an empty segment, which would
    silently leak one image's boxes into its empty neighbour.
    """
    n = offsets.size - 1
    dtype = np.result_type(values.dtype, np.asarray(empty).dtype)
    out = np.full((n, *values.shape[1:]), empty, dtype=dtype)
    counts = np.diff(offsets)
    nz = counts > 0
    if values.size and nz.any():
        out[nz] = ufunc.reduceat(values, offsets[:-1][nz])
    return out


def seg_mean(values, offsets):
    counts = np.diff(offsets)
    with np.errstate(invalid="ignore", divide="ignore"):
        return seg_reduce(np.add, values, offsets) / counts


def seg_std(values, offsets):
    """Population standard deviation per segment (NaN for empty segments)."""
    mean = seg_mean(values, offsets)
    dev = values - np.repeat(mean, np.diff(offsets))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(seg_reduce(np.add, dev * dev, offsets) / np.diff(offsets))


def seg_median(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Median per segment via one lexsort (NaN for empty segments)."""
    counts = np.diff(offsets)
    owner = owner_index(offsets)
    order = np.lexsort((values, owner))
    s = values[order]
    lo = offsets[:-1] + (counts - 1) // 2
    hi = offsets[:-1] + counts // 2
    out = np.full(counts.size, np.nan)
    nz = counts > 0
    out[nz] = 0.5 * (s[lo[nz]] + s[hi[nz]])
    return out


class Pairs:
    """All ordered within-image pairs (i, j), i included with itself, grouped by i.

    Pairs are laid out so that the pairs of box ``i`` are contiguous and start at
    ``starts[i]``; any per-pair quantity reduces to a per-box one with
    ``reduceat(values, starts)`` and that never meets an empty segment.
    """

    def __init__(self, offsets: np.ndarray):
        counts = np.diff(offsets).astype(np.int64)
        owner = owner_index(offsets)
        per_box = counts[owner]  # pairs owned by each box
        self.starts = np.concatenate([[0], np.cumsum(per_box)[:-1]]).astype(np.int64)
        total = int(per_box.sum())
        self.i = np.repeat(np.arange(owner.size), per_box)
        within = np.arange(total) - np.repeat(self.starts, per_box)
        self.j = offsets[:-1][owner][self.i] + within
        self.size = total

    def reduce(self, ufunc, values: np.ndarray) -> np.ndarray:
        if values.size == 0:
            return values
        return ufunc.reduceat(values, self.starts)

    def count(self, mask: np.ndarray) -> np.ndarray:
        return self.reduce(np.add, mask.astype(np.int32))


def chunk_bounds(counts: np.ndarray, max_pairs: int) -> list[tuple[int, int]]:
    """Split images into consecutive chunks whose pair count stays under ``max_pairs``.

    Pairwise work grows with n^2 per image; chunking keeps peak memory bounded whatever
    the dataset size, and a single huge image simply gets a chunk of its own.
    """
    cost = np.cumsum(counts.astype(np.int64) ** 2)
    bounds = []
    start, base = 0, 0
    n = counts.size
    while start < n:
        stop = int(np.searchsorted(cost, base + max_pairs, side="right"))
        stop = max(stop, start + 1)
        bounds.append((start, min(stop, n)))
        base = int(cost[min(stop, n) - 1])
        start = stop
    return bounds
