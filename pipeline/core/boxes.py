"""Vectorised box conversion, clipping and validation.

Every stage that turns someone else's boxes into records (COCO xywh pixels, YOLO
normalised cxcywh, detector xyxy pixels) goes through these functions, so the clipping
rules and reject reasons are the same everywhere. All functions work on whole NumPy
columns; there is no loop per box.
"""

from __future__ import annotations

import numpy as np

# Reject reasons for boxes (strings are stable: they appear in manifests).
NON_NUMERIC = "non_numeric_coordinates"
ZERO_AREA = "zero_area"
OUTSIDE_IMAGE = "outside_image"


def _as_float(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def clip_xyxy_pixels(x0, y0, x1, y1, width, height):
    """Clip pixel xyxy boxes to their images and normalise them to [0, 1].

    Returns ``(xyxy float32 array of shape (n, 4), reason)`` where ``reason`` is an
    object array holding ``None`` for kept boxes and a reject reason otherwise. A box
    that lies wholly outside its image is ``outside_image``; one whose clipped extent is
    empty on either axis is ``zero_area``; NaN/inf coordinates are ``non_numeric``.
    """
    x0, y0, x1, y1 = map(_as_float, (x0, y0, x1, y1))
    w = _as_float(width)
    h = _as_float(height)
    n = x0.shape[0]
    reason = np.full(n, None, dtype=object)

    finite = np.isfinite(x0) & np.isfinite(y0) & np.isfinite(x1) & np.isfinite(y1)
    reason[~finite] = NON_NUMERIC

    lo_x, hi_x = np.minimum(x0, x1), np.maximum(x0, x1)
    lo_y, hi_y = np.minimum(y0, y1), np.maximum(y0, y1)
    with np.errstate(invalid="ignore"):
        outside = finite & ((hi_x <= 0) | (hi_y <= 0) | (lo_x >= w) | (lo_y >= h))
        degenerate = finite & ~outside & ((hi_x - lo_x <= 0) | (hi_y - lo_y <= 0))
    reason[outside & (reason == None)] = OUTSIDE_IMAGE  # object array: elementwise
    reason[degenerate & (reason == None)] = ZERO_AREA

    with np.errstate(invalid="ignore", divide="ignore"):
        cx0 = np.clip(lo_x, 0, w) / w
        cy0 = np.clip(lo_y, 0, h) / h
        cx1 = np.clip(hi_x, 0, w) / w
        cy1 = np.clip(hi_y, 0, h) / h
    xyxy = np.stack([cx0, cy0, cx1, cy1], axis=1).astype(np.float32)
    # Clipping can collapse a box that touched the image only on its border.
    collapsed = (xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1])
    reason[collapsed & (reason == None)] = ZERO_AREA
    return xyxy, reason


def xywh_to_xyxy(x, y, w, h):
    x, y, w, h = map(_as_float, (x, y, w, h))
    return x, y, x + w, y + h


def cxcywh_to_xyxy(cx, cy, w, h):
    cx, cy, w, h = map(_as_float, (cx, cy, w, h))
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def xyxy_to_xywh(x0, y0, x1, y1):
    x0, y0, x1, y1 = map(_as_float, (x0, y0, x1, y1))
    return x0, y0, x1 - x0, y1 - y0


def box_area(x0, y0, x1, y1) -> np.ndarray:
    return np.clip(_as_float(x1) - _as_float(x0), 0, None) * np.clip(
        _as_float(y1) - _as_float(y0), 0, None
    )
