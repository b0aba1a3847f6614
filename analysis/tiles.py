"""Cut a mosaic or tiled composite back into its tiles, from its boxes alone.

A mosaic's tiles are whole photos (or crops of them), so rather than discard the image
the audit can give each tile back as a training image of its own. The tile borders are
found the way the layout statistics see them (``analysis.layout_group``): lines no box
crosses. In order:

1. equal tiles: if no box crosses the 3x3 (then the 2x2) equal-tile borders and the
   boxes occupy nearly every tile, those are the tiles (collages);
2. otherwise the most balanced free cross (``cross_min``'s cross): per axis, the line no
   box crosses that leaves the most boxes on its smaller side, with boxes in all four
   quadrants. It is placed inside the gap between the boxes on either side: where boxes
   touch the line from both sides (photos cut at the border) the gap is the border
   itself; else at 1/2, 1/3 or 2/3 when that lies in the gap (equal tiles); else mid-gap,
   where the crop still agrees with the boxes because both are cut at the same line.

Each tile keeps the boxes whose centre lies in it, clipped to it and renormalised to
it; boxes under ``min_area`` of the tile are dropped (GLIGEN's minimum-area rule), and
so are tiles left without boxes. An image with no such structure cannot be split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.layout_group import CROSS_MARGIN, SEAM_TOL

REGULAR = (1 / 2, 1 / 3, 2 / 3)


@dataclass
class Tile:
    """A tile's window (normalised xyxy of the image) and its boxes."""

    window: tuple[float, float, float, float]
    index: np.ndarray  # which of the image's boxes it holds
    boxes: np.ndarray  # (k, 4) normalised to the tile
    dropped: np.ndarray  # indices of its boxes under the minimum area


def _free(lines: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return ~((lo[None] < lines[:, None] - SEAM_TOL) & (hi[None] > lines[:, None] + SEAM_TOL)).any(1)


def _equal(b: np.ndarray) -> list[float] | None:
    """Equal-tile borders (k = 3, then 2) that no box crosses, with the boxes' centres
    in all but k - 1 of the k x k tiles."""
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    for k in (3, 2):
        lines = np.arange(1, k) / k
        if not (_free(lines, b[:, 0], b[:, 2]).all() and _free(lines, b[:, 1], b[:, 3]).all()):
            continue
        cell = np.minimum((cx * k).astype(int), k - 1) * k + np.minimum((cy * k).astype(int), k - 1)
        if np.unique(cell).size >= k * k - (k - 1):
            return list(lines)
    return None


def _cut(lo: np.ndarray, hi: np.ndarray, c2: np.ndarray) -> float | None:
    """The most balanced free line along one axis, placed in its gap."""
    cand = np.concatenate([lo, hi])
    ok = _free(cand, lo, hi) & (cand > CROSS_MARGIN) & (cand < 1 - CROSS_MARGIN)
    if not ok.any():
        return None
    before = (c2[None] < 2 * cand[:, None]).sum(1)
    balance = np.where(ok, np.minimum(before, c2.size - before), -1)
    line = cand[int(np.argmax(balance))]
    left = c2 < 2 * line
    if left.all() or not left.any():
        return None
    gap_lo, gap_hi = hi[left].max(), lo[~left].min()
    if gap_hi - gap_lo <= 2 * SEAM_TOL:  # boxes cut at the border from both sides
        return float((gap_lo + gap_hi) / 2)
    for f in REGULAR:
        if gap_lo - SEAM_TOL <= f <= gap_hi + SEAM_TOL:
            return f
    return float((gap_lo + gap_hi) / 2)


def tile_windows(boxes: np.ndarray) -> list[tuple[float, float, float, float]] | None:
    """The tiles of one image (normalised xyxy windows), or None if it has none."""
    b = np.clip(np.asarray(boxes, float).reshape(-1, 4), 0, 1)
    if len(b) < 2:
        return None
    eq = _equal(b)
    if eq is not None:
        xs = ys = [0.0, *eq, 1.0]
    else:
        x = _cut(b[:, 0], b[:, 2], b[:, 0] + b[:, 2])
        y = _cut(b[:, 1], b[:, 3], b[:, 1] + b[:, 3])
        if x is None or y is None:
            return None
        xs, ys = [0.0, x, 1.0], [0.0, y, 1.0]
    return [
        (xs[i], ys[j], xs[i + 1], ys[j + 1]) for j in range(len(ys) - 1) for i in range(len(xs) - 1)
    ]


def split_boxes(boxes: np.ndarray, min_area: float) -> list[Tile] | None:
    """The image's tiles with their boxes (see the module's docstring), or None."""
    b = np.clip(np.asarray(boxes, float).reshape(-1, 4), 0, 1)
    windows = tile_windows(b)
    if windows is None:
        return None
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    tiles = []
    for x0, y0, x1, y1 in windows:
        last_x, last_y = x1 >= 1.0, y1 >= 1.0  # centres on the far border belong here
        inside = (cx >= x0) & ((cx < x1) | last_x) & (cy >= y0) & ((cy < y1) | last_y)
        idx = np.flatnonzero(inside)
        w, h = x1 - x0, y1 - y0
        t = np.column_stack(
            [
                (np.clip(b[idx, 0], x0, x1) - x0) / w,
                (np.clip(b[idx, 1], y0, y1) - y0) / h,
                (np.clip(b[idx, 2], x0, x1) - x0) / w,
                (np.clip(b[idx, 3], y0, y1) - y0) / h,
            ]
        )
        small = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1]) < min_area
        tiles.append(Tile((x0, y0, x1, y1), idx[~small], t[~small], idx[small]))
    return tiles
