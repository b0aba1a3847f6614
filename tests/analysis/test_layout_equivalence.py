"""The compiled pairwise statistics equal a per-image reference written from definitions.

``analysis/_layout_kernels.c`` computes nearest neighbours, alignment partners, seams, cuts
and the free cross 16 images at a time, with tricks for speed (one unsigned compare for a
tolerance window, counts kept as subtracted masks, a short last group of images padded).
The reference below is the plain definition, one image and one box or candidate line at a
time in Python integers, on the same int16 quantisation (``_quantise``), so every value
must be equal: these components are box counts, and the nearest-neighbour distance is
the same two float32 squares and one float32 sum.
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
    LOG_QUANT,
    PAIR_TOLERANCES,
    QCROSS,
    QTOL,
    QUANT,
    SEAM_MARGIN,
    SIMILAR_SIZE,
    _quantise,
)
from analysis.layout_kernels import pairwise_block
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


def _log_q(lo, hi):
    """Quantised log sizes, as ``block_stats`` makes them (float32 log, then int16)."""
    size = np.maximum(np.float32(hi) - np.float32(lo), np.float32(1e-6))
    return int(np.rint(np.log(size) * LOG_QUANT).astype(np.int16))


def _alignment(x0, y0, x1, y1, f):
    """Row, column and baseline partner shares of one image: boxes of similar size (log
    sizes within SIMILAR_SIZE) side by side (|dx| > mean width / 2) with centres in one
    row (|dy| < mean height / 4) or bottoms on one baseline (< mean height / 16), or
    stacked in one column (|dy| > mean height / 2, |dx| < mean width / 4). Offsets are of
    doubled centres and thresholds of summed sizes: the same ratios, in integers."""
    n = len(x0)
    t = round(SIMILAR_SIZE * LOG_QUANT)
    lw = [_log_q(f[0][i], f[2][i]) for i in range(n)]
    lh = [_log_q(f[1][i], f[3][i]) for i in range(n)]
    counts = {"row_align": [0] * n, "col_align": [0] * n, "baseline_align": [0] * n}
    for i in range(n):
        for j in range(n):
            dx = abs((x0[j] + x1[j]) - (x0[i] + x1[i]))
            dy = abs((y0[j] + y1[j]) - (y0[i] + y1[i]))
            ws = (x1[i] - x0[i]) + (x1[j] - x0[j])
            hs = (y1[i] - y0[i]) + (y1[j] - y0[j])
            beside = 0 <= lh[j] - lh[i] + t < 2 * t and dx > ws >> 1
            counts["row_align"][i] += beside and dy < hs >> 2
            counts["baseline_align"][i] += beside and abs(y1[j] - y1[i]) < hs >> 5
            column = 0 <= lw[j] - lw[i] + t < 2 * t and dy > hs >> 1 and dx < ws >> 2
            counts["col_align"][i] += column
    return {k: sum(c >= 2 for c in v) / n for k, v in counts.items()}


def _nearest_d2(x0, y0, x1, y1):
    """Each box's squared distance to the nearest other centre, doubled quantised units,
    in float32 (two squares and a sum, no fused multiply-add)."""
    c = [(a + b, d + e) for a, d, b, e in zip(x0, y0, x1, y1)]
    f32 = np.float32
    return [
        min(
            f32(abs(cx - ox)) * f32(abs(cx - ox)) + f32(abs(cy - oy)) * f32(abs(cy - oy))
            for j, (ox, oy) in enumerate(c)
            if j != i
        )
        for i, (cx, cy) in enumerate(c)
    ]


PAIRWISE = ("seam_x", "seam_y", "cut_x", "cut_y", "cross_min")
ALIGNMENT = ("row_align", "col_align", "baseline_align")


def _quantised(lay: Layouts, m: int):
    s = slice(lay.offsets[m], lay.offsets[m + 1])
    f = [np.clip(np.asarray(a[s], np.float32), 0, 1) for a in (lay.x0, lay.y0, lay.x1, lay.y1)]
    return f, [[int(v) for v in _quantise(a)] for a in f]


def reference(lay: Layouts) -> dict:
    """Seams, cuts, the cross and the alignment shares per image, image by image."""
    cols = {k: [] for k in PAIRWISE + ALIGNMENT}
    for m in range(lay.n_images):
        f, q = _quantised(lay, m)
        if len(f[0]) < MIN_BOXES_FOR_EVIDENCE:
            for v in cols.values():
                v.append(0)
            continue
        sx, cx = _seam_and_cut(f[2], q[0], q[2], q[1], q[3])
        sy, cy = _seam_and_cut(f[3], q[1], q[3], q[0], q[2])
        for k, v in zip(PAIRWISE, (sx, sy, cx, cy, _cross_min(*q))):
            cols[k].append(v)
        for k, v in _alignment(*q, f).items():
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


def _degenerate(n_images: int, seed: int) -> Layouts:
    """What real labels hold besides tidy boxes: repeated boxes, zero-width and
    sub-tolerance boxes, boxes on the image border or over the whole image, coordinates
    on a coarse grid; 4 to 40 boxes, and one image of 256 (more than a byte counts)."""
    rng = np.random.default_rng(seed)
    counts = np.append(rng.integers(4, 41, n_images - 1), 256)
    k = counts.sum()
    lo = np.floor(rng.random((2, k)) * 4) / 4
    hi = np.minimum(lo + rng.choice([0.0, 0.001, 0.002, 0.25, 0.5, 1.0], (2, k)), 1.0)
    whole = rng.random(k) < 0.05
    lo[:, whole], hi[:, whole] = 0.0, 1.0
    repeat = np.flatnonzero(rng.random(k) < 0.2)
    lo[:, repeat], hi[:, repeat] = lo[:, repeat - 1], hi[:, repeat - 1]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return Layouts(offsets, lo[0], lo[1], hi[0], hi[1], np.full(n_images, "degenerate"))


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
        pytest.param(lambda: _degenerate(60, 3), id="degenerate"),
    ],
)
def test_pairwise_components_equal_the_per_image_reference(layouts):
    lay = layouts()
    got = grid_scores_from_arrays(*lay.arrays())
    want = reference(lay)
    for k, v in want.items():
        # box counts (shares of box counts): equal exactly, as the float32 columns hold them
        np.testing.assert_array_equal(got[k], v.astype(np.float32), err_msg=k)
    # the layouts exercise what is compared: seams, cuts, crosses and rows do occur
    assert all(np.count_nonzero(v) > 0 for v in want.values())


@pytest.mark.parametrize("snap", [None, 16])
@pytest.mark.parametrize("n", [2, 3, 4, 9, 31])
@pytest.mark.parametrize("m", [1, 15, 16, 17, 40])
def test_nearest_distances_equal_the_reference_for_every_image_of_a_block(n, m, snap):
    """Blocks of m images (16 at a time in the kernel: a short last group, and exactly
    one group) with n boxes each. Snapped coordinates make distances tie; free ones make
    squares that float32 must round (over 2**24), where a fused multiply-add would give
    other numbers."""
    lay = _random(m, n * 100 + m, snap)
    counts = np.diff(lay.offsets)
    at = lay.offsets[:-1][None, :] + np.arange(n)[:, None]  # the first n boxes of each image
    at = np.minimum(at, (lay.offsets[1:] - 1)[None, :])  # images with fewer repeat their last
    coords = [np.clip(a[at].astype(np.float32), 0, 1) for a in (lay.x0, lay.y0, lay.x1, lay.y1)]
    got = pairwise_block(
        [_quantise(a) for a in coords], None, None, None, None, False, PAIR_TOLERANCES
    )
    assert counts.min() >= 4
    for k in range(m):
        q = [[int(v) for v in _quantise(a[:, k])] for a in coords]
        want = np.array(_nearest_d2(*q), np.float32)
        np.testing.assert_array_equal(got["d2min"][:, k], want, err_msg=f"image {k}")
