"""Mosaic augmentation as training pipelines build it (ultralytics' ``Mosaic``), on layouts.

The audit must catch datasets whose images were saved *after* mosaic augmentation. This
module rebuilds those layouts from natural scenes, following ultralytics'
``ultralytics/data/augment.py`` (``Mosaic._mosaic4``, ``_mosaic9``, ``RandomPerspective``):

- every source photo is resized so its long side is ``s`` (aspect kept), so tiles differ
  in size and a canvas of ``2s`` is not filled (grey padding where no tile reaches);
- 4 images: a centre ``(xc, yc)`` uniform in ``[s/2, 3s/2]`` (``[0.25, 0.75]`` of the
  canvas); photo 0 ends at the centre from the top left, 1 from the top right, 2 from the
  bottom left, 3 from the bottom right; each is cropped at the canvas edge, and so are
  its boxes (only zero-area boxes are dropped, so slivers stay);
- 9 images: photo 0 at ``(s, s)`` of a ``3s`` canvas, the others around it, each placed
  against the previous one (their borders do not line up into one cross), then a ``2s``
  window at a random offset in ``[0, s)``;
- ``affine=True`` adds ``RandomPerspective``'s crop as used after ``Mosaic`` (scale
  0.5-1.5, translate 0.1, output ``s``): the saved image is a view around the canvas
  centre, and boxes that keep under 10% of their area or under 2 px are dropped.

Coordinates here are in units of ``s`` until they are normalised to the output image.
Everything is vectorised over mosaics and is a pure function of the seed.
"""

from __future__ import annotations

import numpy as np

from analysis.calibration import MOSAIC_AUG, Layouts, _seg_arange, from_boxes

IMGSZ = 640  # pixels per s: only for ultralytics' 2-pixel minimum box side


def photo_aspects(n: int, seed: int) -> np.ndarray:
    """Width / height of natural photos: mostly 4:3 landscape, some portrait, square, wide."""
    rng = np.random.default_rng(seed)
    choices = np.array([4 / 3, 3 / 4, 1.0, 16 / 9, 3 / 2, 2 / 3])
    return choices[rng.choice(choices.size, n, p=[0.5, 0.2, 0.08, 0.08, 0.1, 0.04])]


def _tiles4(xc, yc, w, h):
    """Photo origin (padw, padh) and the visible window of each of 4 tiles: (n, 4) arrays."""
    left = np.array([1, 0, 1, 0], bool)  # tiles 0, 2 end at xc; 1, 3 start there
    top = np.array([1, 1, 0, 0], bool)
    px = np.where(left, xc[:, None] - w, xc[:, None])
    py = np.where(top, yc[:, None] - h, yc[:, None])
    return px, py, 2.0


def _tiles9(w, h, rng):
    """Ultralytics' 9-image placement on a 3s canvas, then a 2s window at a random offset.

    ``c`` = (xmin, ymin) of each photo, each placed against photo 0 (size w0, h0) and
    the previous photo (size wp, hp), as ``Mosaic._mosaic9`` does.
    """
    n = w.shape[0]
    px, py = np.empty((n, 9)), np.empty((n, 9))
    w0, h0 = w[:, 0], h[:, 0]
    for i in range(9):
        wi, hi = w[:, i], h[:, i]
        wp, hp = (w[:, i - 1], h[:, i - 1]) if i else (w0, h0)
        c = {
            0: (1, 1),
            1: (1, 1 - hi),
            2: (1 + wp, 1 - hi),
            3: (1 + w0, 1),
            4: (1 + w0, 1 + hp),
            5: (1 + w0 - wi, 1 + h0),
            6: (1 + w0 - wp - wi, 1 + h0),
            7: (1 - wi, 1 + h0 - hi),
            8: (1 - wi, 1 + h0 - hp - hi),
        }[i]
        px[:, i], py[:, i] = c[0] + 0 * wi, c[1] + 0 * hi
    # the later photo wins where two overlap; ultralytics pastes in order, so do we below
    ox, oy = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    return px - ox[:, None], py - oy[:, None], 2.0


def ultralytics_mosaics(
    n: int,
    seed: int,
    scenes: Layouts,
    aspects: np.ndarray,
    *,
    nine: float = 0.25,
    affine: bool = False,
    kind: str = MOSAIC_AUG,
) -> Layouts:
    """``n`` mosaic layouts: a share ``nine`` of 9-image mosaics, the rest 4-image.

    ``scenes`` are natural layouts (normalised xyxy per photo) and ``aspects`` their
    photos' width / height. Boxes of a photo are scaled to its resized size, shifted to
    its place, and cut at the canvas (and, for 9-image mosaics, at the photos pasted over
    it later); those with no area left are dropped.
    """
    if n == 0 or scenes.n_images == 0:
        empty = np.zeros(0)
        return from_boxes(np.zeros(0, np.int64), empty, empty, empty, empty, n, kind)
    rng = np.random.default_rng(seed)
    k9 = rng.random(n) < nine
    n_tiles = np.where(k9, 9, 4)
    owner = np.repeat(np.arange(n), n_tiles)
    t = _seg_arange(n_tiles)
    scene = rng.integers(0, scenes.n_images, owner.size)
    a = aspects[scene]
    w, h = np.minimum(1.0, a), np.minimum(1.0, 1.0 / a)  # long side = s
    px, py = np.empty(owner.size), np.empty(owner.size)
    canvas = 2.0
    # 4-image mosaics
    m4 = np.flatnonzero(~k9)
    sel4 = ~k9[owner]
    xc, yc = rng.uniform(0.5, 1.5, n), rng.uniform(0.5, 1.5, n)
    W4, H4 = w[sel4].reshape(-1, 4), h[sel4].reshape(-1, 4)
    qx, qy, _ = _tiles4(xc[m4], yc[m4], W4, H4)
    px[sel4], py[sel4] = qx.ravel(), qy.ravel()
    # 9-image mosaics
    sel9 = k9[owner]
    if sel9.any():
        W9, H9 = w[sel9].reshape(-1, 9), h[sel9].reshape(-1, 9)
        qx, qy, _ = _tiles9(W9, H9, rng)
        px[sel9], py[sel9] = qx.ravel(), qy.ravel()
    # visible window of each tile: its photo cut at the canvas
    wx0, wy0 = np.clip(px, 0, canvas), np.clip(py, 0, canvas)
    wx1, wy1 = np.clip(px + w, 0, canvas), np.clip(py + h, 0, canvas)
    # boxes of each tile's photo
    cnt = np.diff(scenes.offsets)[scene]
    tb = np.repeat(np.arange(owner.size), cnt)
    src = scenes.offsets[:-1][scene][tb] + _seg_arange(cnt)
    bx0 = np.clip(px[tb] + scenes.x0[src] * w[tb], wx0[tb], wx1[tb])
    bx1 = np.clip(px[tb] + scenes.x1[src] * w[tb], wx0[tb], wx1[tb])
    by0 = np.clip(py[tb] + scenes.y0[src] * h[tb], wy0[tb], wy1[tb])
    by1 = np.clip(py[tb] + scenes.y1[src] * h[tb], wy0[tb], wy1[tb])
    keep = (bx1 > bx0) & (by1 > by0)
    if sel9.any():  # a 9-mosaic photo pasted later hides what lies under it
        keep &= ~_covered_by_later(owner, t, tb, bx0, by0, bx1, by1, wx0, wy0, wx1, wy1, sel9)
    mo = owner[tb]
    area_before = (bx1 - bx0) * (by1 - by0)
    if affine:
        scale = rng.uniform(0.5, 1.5, n)[mo]
        tx, ty = rng.uniform(0.4, 0.6, n)[mo], rng.uniform(0.4, 0.6, n)[mo]
        bx0, bx1 = (bx0 - 1) * scale + tx, (bx1 - 1) * scale + tx
        by0, by1 = (by0 - 1) * scale + ty, (by1 - 1) * scale + ty
        area_before = area_before * scale**2
        bx0, bx1, by0, by1 = (np.clip(v, 0, 1) for v in (bx0, bx1, by0, by1))
        out_size = 1.0
    else:
        out_size = canvas
    bw, bh = bx1 - bx0, by1 - by0
    px2 = 2.0 / IMGSZ  # ultralytics' box_candidates: sides over 2 px, >10% area kept
    keep &= (bw > px2) & (bh > px2)
    if affine:
        keep &= bw * bh > 0.1 * area_before
    f = 1.0 / out_size
    return from_boxes(
        mo[keep], bx0[keep] * f, by0[keep] * f, bx1[keep] * f, by1[keep] * f, n, kind, 0.0
    )


def _covered_by_later(owner, t, tb, bx0, by0, bx1, by1, wx0, wy0, wx1, wy1, sel9):
    """Boxes of a 9-mosaic tile whose centre lies under a photo pasted after it."""
    mo, tt = owner[tb], t[tb]
    cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
    first = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])  # first tile per mosaic
    base = first[mo]
    hidden = np.zeros(tb.size, bool)
    for j in range(1, 9):
        later = sel9[tb] & (tt < j)
        k = base + j
        k = np.where(later, k, 0)
        under = (cx > wx0[k]) & (cx < wx1[k]) & (cy > wy0[k]) & (cy < wy1[k])
        hidden |= later & under
    return hidden
