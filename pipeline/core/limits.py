"""Resource limits: the most one image may hold, checked where data enters and on read.

A hand-made or tampered input (one image with 100,000 boxes, an image declared 2 GB, a
1 MB caption) used to reach a stage's inner loop and end in a MemoryError, a multi-GB
peak or a traceback. The limits (``pipeline/core/defaults.py``, documented in
``docs/limits.md``) are what every stage was measured to hold. Ingest rejects an image
over them with a reason (counted like any reject); a dataset directory that holds one
anyway is refused on read with one line naming the row and the limit.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.core import arrow_kernels as kernels
from pipeline.core.defaults import MAX_BOXES_PER_IMAGE, MAX_CAPTION_CHARS, MAX_IMAGE_PIXELS

# Reject reasons (stable strings: they appear in manifests).
TOO_MANY_BOXES = "too_many_boxes"
IMAGE_TOO_LARGE = "image_too_large"
CAPTION_TOO_LONG = "caption_too_long"
SEE = "see docs/limits.md"


def too_large(width, height) -> np.ndarray:
    """Images whose declared pixel count is over the decoder's limit (int64: no overflow)."""
    w = np.asarray(width, dtype=np.int64)
    h = np.asarray(height, dtype=np.int64)
    return w * h > MAX_IMAGE_PIXELS


def too_many(counts) -> np.ndarray:
    return np.asarray(counts, dtype=np.int64) > MAX_BOXES_PER_IMAGE


def long_strings(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Strings over the caption limit, in characters (nulls are not)."""
    lengths = kernels.fill_null(kernels.utf8_length(values), 0)
    return np.asarray(lengths, dtype=np.int64) > MAX_CAPTION_CHARS


def first_over(table: pa.Table) -> tuple[int, str] | None:
    """The first row of a records table (or projection) over a limit, and why; None when
    every row is within them. Only the columns present are checked."""
    names = table.column_names
    hits: list[tuple[int, str]] = []
    for column, what in (("boxes", "boxes"), ("crowd", "crowd regions")):
        if column in names:
            counts = kernels.fill_null(kernels.list_value_length(table.column(column)), 0)
            bad = np.flatnonzero(too_many(counts))
            if bad.size:
                n = int(np.asarray(counts)[bad[0]])
                hits.append((int(bad[0]), f"{n} {what}, over the limit of {MAX_BOXES_PER_IMAGE}"))
    if "width" in names and "height" in names:
        w, h = (table.column(c).to_numpy(zero_copy_only=False) for c in ("width", "height"))
        bad = np.flatnonzero(too_large(w, h))
        if bad.size:
            k = int(bad[0])
            hits.append(
                (k, f"size {int(w[k])}x{int(h[k])}, over the limit of {MAX_IMAGE_PIXELS} pixels")
            )
    if "captions" in names:
        caps = table.column("captions")
        caps = kernels.one_array(caps)
        caps = kernels.fill_null(caps, []) if caps.null_count else caps
        long = long_strings(kernels.list_flatten(caps))
        if long.any():
            k = int(np.flatnonzero(long)[0])
            offsets = np.asarray(caps.offsets, dtype=np.int64) - int(caps.offsets[0].as_py())
            row = int(np.searchsorted(offsets, k, side="right") - 1)
            hits.append((row, f"a caption over the limit of {MAX_CAPTION_CHARS} characters"))
    return min(hits) if hits else None
