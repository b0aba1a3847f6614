"""Segment operations over flattened per-image box arrays.

Every image's boxes sit contiguously in flat arrays, delimited by ``offsets`` (Arrow's
list offsets). Per-image statistics then become ``ufunc.reduceat`` over those segments,
so a million images cost a handful of NumPy calls instead of a million Python iterations.
(Pairwise statistics use dense same-count blocks instead: ``analysis.layout_group``.)
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
