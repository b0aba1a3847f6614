"""The vectorised seam, cut and cross statistics equal a per-image reference.

``analysis.layout_group`` computes them as broadcast ``(n, n, m)`` passes with tricks for
speed (one unsigned compare for a tolerance window, a masked minimum taken as a product
with the mask, far-edge crossings shared between the seams and the cross). The reference
below is the plain definition, one image and one candidate line at a time in Python
integers, on the same int16 quantisation (``_quantise``), so every value must be equal:
these components are box counts, no floating-point sum is involved.
"""

import numpy as np
import pytest

from analysis.augment_mosaic import photo_aspects, ultralytics_mosaics
from analysis.calibration import (
    Layouts,
    boards,
    concat,
    lattice,
    mosaics,
    shelf_rows,
    synthetic_natural,
)
from analysis.layout_group import (
    CUT_QTOL,
    CUT_SHIFT,
    QCROSS,
    QTOL,
    QUANT,
    SEAM_MARGIN,
    _quantise,
)
from analysis.layout_stats import grid_scores_from_arrays
from pipeline.core.defaults import MIN_BOXES_FOR_EVIDENCE

U16 = 0xFFFF  # int16 offsets read as unsigned, as the vectorised code views them


def _seam_and_cut(far, lo, hi, olo, ohi):
    """(seam, cut) of one image along one axis; lines at every box's far edge ``hi``
    (``far`` its float32 coordinate, for the border margin)."""
    n, seam, cut = len(lo), 0, 0
    for j in range(n):
        base = hi[j] - QTOL
        dh = [h - base for h in hi]
        dl = [v - base for v in lo]
        # an edge is on the line when its offset from base is in [0, 2 QTOL); the nearer
        # edge (smaller unsigned offset) decides, for the seam and for the cut alike
        near = [min(a & U16, b & U16) for a, b in zip(dh, dl)]
        crossing = [dl[i] < 0 and dh[i] > 2 * QTOL for i in range(n)]
        n_far = n - sum(d < 0 for d in dl) - (lo[j] - hi[j] >= -QTOL)
        inside = SEAM_MARGIN < far[j] < 1 - SEAM_MARGIN
        if not any(crossing) and n_far >= 1 and inside:
            seam = max(seam, sum(d < 2 * QTOL for d in near))
        on = [((d - int(CUT_SHIFT)) & U16) < 2 * CUT_QTOL for d in near]
        k = sum(on)
        if k >= 2 and inside:
            a = min(olo[i] for i in range(n) if on[i])
            b = max(ohi[i] for i in range(n) if on[i])
            if not any(crossing[i] and olo[i] < b and ohi[i] > a for i in range(n)):
                cut = max(cut, k)
    return seam, cut


def _cross_side(lo, hi):
    """The chosen line of one axis for the cross: (each box's side, line is free)."""
    n = len(lo)
    lines = list(lo) + list(hi)
    c2 = [a + b for a, b in zip(lo, hi)]
    best, best_value = 0, None
    for c, line in enumerate(lines):
        crossed = any(lo[i] < line - QTOL and hi[i] > line + QTOL for i in range(n))
        free = not crossed and QCROSS < line < QUANT - QCROSS
        k = sum(v < 2 * line for v in c2)
        value = min(k, n - k) if free else -1
        if best_value is None or value > best_value:  # the first of the best
            best, best_value = c, value
    return [v < 2 * lines[best] for v in c2], best_value >= 0


def _cross_min(x0, y0, x1, y1):
    left, fx = _cross_side(x0, x1)
    top, fy = _cross_side(y0, y1)
    quads = [0, 0, 0, 0]
    for a, b in zip(left, top):
        quads[2 * (not a) + (not b)] += 1
    return min(quads) if fx and fy else 0


def reference(lay: Layouts) -> dict:
    """seam_x, seam_y, cut_x, cut_y, cross_min per image, image by image."""
    cols = {k: [] for k in ("seam_x", "seam_y", "cut_x", "cut_y", "cross_min")}
    for m in range(lay.n_images):
        s = slice(lay.offsets[m], lay.offsets[m + 1])
        f = [np.clip(np.asarray(a[s], np.float32), 0, 1) for a in (lay.x0, lay.y0, lay.x1, lay.y1)]
        q = [[int(v) for v in _quantise(a)] for a in f]
        if len(f[0]) < MIN_BOXES_FOR_EVIDENCE:
            for v in cols.values():
                v.append(0)
            continue
        sx, cx = _seam_and_cut(f[2], q[0], q[2], q[1], q[3])
        sy, cy = _seam_and_cut(f[3], q[1], q[3], q[0], q[2])
        for k, v in zip(cols, (sx, sy, cx, cy, _cross_min(*q))):
            cols[k].append(v)
    return {k: np.array(v, float) for k, v in cols.items()}


def _random(n_images: int, seed: int, snap: int | None) -> Layouts:
    """Random boxes (uniform centres, sides 0.02-0.35), 4-14 per image; with ``snap`` their edges sit on a coarse
    grid of ``snap`` steps, so edges coincide (cuts, seams) and lines go uncrossed."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(4, 15, n_images)
    k = counts.sum()
    centre, size = rng.random((2, k)), rng.uniform(0.02, 0.35, (2, k))
    lo, hi = np.clip(centre - size / 2, 0, 1), np.clip(centre + size / 2, 0, 1)
    if snap:
        lo, hi = np.floor(lo * snap) / snap, np.ceil(hi * snap) / snap
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return Layouts(offsets, lo[0], lo[1], hi[0], hi[1], np.full(n_images, "random"))


def _kinds() -> Layouts:
    scenes = synthetic_natural(100, 11)
    return concat(
        [
            synthetic_natural(60, 1),
            lattice(20, 2),
            shelf_rows(20, 3),
            boards(20, 4),
            mosaics(20, 5, scenes),
            ultralytics_mosaics(40, 6, scenes, photo_aspects(100, 7)),
        ]
    )


@pytest.mark.parametrize(
    "layouts",
    [
        pytest.param(lambda: _random(150, 0, None), id="random"),
        pytest.param(lambda: _random(150, 1, 8), id="random-snapped-8"),
        pytest.param(lambda: _random(150, 2, 20), id="random-snapped-20"),
        pytest.param(_kinds, id="calibration-kinds"),
    ],
)
def test_seams_cuts_and_cross_equal_the_per_image_reference(layouts):
    lay = layouts()
    got = grid_scores_from_arrays(*lay.arrays())
    want = reference(lay)
    for k, v in want.items():
        # box counts: equal exactly (float64 columns holding small integers)
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    # the layouts exercise what is compared: seams, cuts and crosses do occur
    assert all(np.count_nonzero(v) > 0 for v in want.values())
