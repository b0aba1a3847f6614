"""Layout components for a block of images that all hold the same number of boxes.

``analysis.layout_stats`` buckets images by box count, so every block is a dense
``(n, m)`` array (image axis last) and every within-image pairwise quantity a broadcast
``(n, n, m)`` array, ``[i, j, image]``: no gathers, no padding, no per-image Python.
Pairwise work is in int16 multiples of 1/QUANT (float32 for distances): ample for
tolerances of 1e-3, with a quarter of float64's memory traffic.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.defaults import MIN_BOXES_FOR_EVIDENCE

SEAM_TOL = 0.003  # box edges within this (image fraction) of a line count as "on" it
SEAM_MARGIN = 0.08  # lines this close to the image border are not seams (clipped objects)
ROW_TOL = 0.25  # centres within ROW_TOL * mean height share a row (a shift: keep 2**-k)
BASELINE_TOL = 0.0625  # bottoms within BASELINE_TOL * mean height share a baseline
SIMILAR_SIZE = float(np.log(1.5))  # |log size ratio| under this counts as "similar"
PERIOD_FACTORS = np.geomspace(0.6, 2.6, 13).astype(np.float32)  # spacings / median NN

COMPONENTS = [
    "cx_mean",
    "cy_mean",
    "cx_std",
    "cy_std",
    "log_area_mean",
    "log_area_std",
    "clark_evans",
    "nn_cv",
    "row_align",
    "col_align",
    "baseline_align",
    "size_homogeneity",
    "periodicity_x",
    "periodicity_y",
    "seam_x",
    "seam_y",
    "cross_cells",
    "tile_free",
    "cut_x",
    "cut_y",
    "cross_min",
]


QUANT = 8192  # seams compare edges as int16 multiples of 1/QUANT: 2-4x less traffic
QTOL = round(SEAM_TOL * QUANT)
CUT_TOL = 0.001  # box edges within this of a cut line count as cut there (see _seams)
CUT_QTOL = round(CUT_TOL * QUANT)
CUT_SHIFT = np.uint16(QTOL - CUT_QTOL)  # the seams' offsets are shifted by +QTOL
BIG = np.int16(QUANT + 1)  # past every quantised edge (0..QUANT once clipped to the image)
LOW_EVIDENCE_ZERO = (
    "row_align",
    "col_align",
    "baseline_align",
    "periodicity_x",
    "periodicity_y",
    "seam_x",
    "seam_y",
    "cross_cells",
    "tile_free",
    "cut_x",
    "cut_y",
    "cross_min",
)
LOG_QUANT = 1000  # log sizes (>= log 1e-6 = -13.8) compared as int16 multiples of 1/1000


def _quantise(a: np.ndarray) -> np.ndarray:
    return np.rint(a * QUANT).astype(np.int16)


def _within(a: np.ndarray, tol: float, scale: float) -> np.ndarray:
    """Pairwise ``|a_j - a_i| < tol`` on int16-quantised values with one unsigned compare."""
    q = np.rint(a * scale).astype(np.int16)
    t = round(tol * scale)
    return (q[:, None, :] - (q - t)[None, :, :]).view(np.uint16) < 2 * t


def _count(mask: np.ndarray) -> np.ndarray:
    """``mask.sum(0)`` over the first axis in a narrow counter. Bools are summed as their
    uint8 view when the count fits: the same integers without a per-element cast, which
    halves the cost of these (n, n, m) reductions."""
    if mask.shape[0] < 255:
        return mask.view(np.uint8).sum(0, dtype=np.uint8)
    return mask.sum(0, dtype=np.int32)


def _absdiff(a: np.ndarray) -> np.ndarray:
    """Pairwise ``|a_i - a_j|`` as ``[i, j, image]``, the abs taken in place."""
    d = a[:, None, :] - a[None, :, :]
    return np.abs(d, out=d)


def _distinct(cell: np.ndarray, k: int) -> np.ndarray:
    """How many of the values 0..k-1 (k <= 16) occur along axis 0: one bit per value,
    or-reduced and counted, instead of k compare-and-any passes."""
    c = cell.astype(np.uint16)  # negatives wrap to large values: no cell (NaN input)
    bits = np.left_shift(np.uint16(1), c)
    bits *= c < k
    return np.bitwise_count(np.bitwise_or.reduce(bits, axis=0))


def _partners(mask: np.ndarray) -> np.ndarray:
    """Share of boxes with at least two partners (a row of three or more)."""
    return (_count(mask) >= 2).mean(0)


def block_stats(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> dict:
    """Every component for a block of m images with n boxes each; inputs are ``(n, m)``.

    Images with fewer than ``MIN_BOXES_FOR_EVIDENCE`` boxes get only the descriptive and
    nearest-neighbour components; their alignment, periodicity and seam components are 0
    (too few boxes to show any), which also keeps the common tiny images cheap.
    Values keep the dtype they were computed in (float32, small integers); the caller's
    float32 columns cast them on assignment, which saves a conversion pass per component.
    """
    n, m = x0.shape
    x0, y0, x1, y1 = (np.asarray(a, dtype=np.float32) for a in (x0, y0, x1, y1))
    q = [_quantise(a) for a in (x0, y0, x1, y1)]  # int16 multiples of 1/QUANT
    w = np.maximum(x1 - x0, 1e-6)
    h = np.maximum(y1 - y0, 1e-6)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    lw, lh = np.log(w), np.log(h)
    la = lw + lh
    out = {
        "cx_mean": cx.mean(0),
        "cy_mean": cy.mean(0),
        "cx_std": cx.std(0),
        "cy_std": cy.std(0),
        "log_area_mean": la.mean(0),
        "log_area_std": la.std(0),
    }
    out["size_homogeneity"] = np.exp(-out["log_area_std"])
    # Doubled centres and pairwise centre offsets, in int16 units of 1/QUANT: exact
    # enough for every tolerance below and half the memory traffic of float32.
    c2x, c2y = q[0] + q[2], q[1] + q[3]
    adx2, ady2 = _absdiff(c2x), _absdiff(c2y)
    out.update(_nearest(adx2, ady2, n, m))
    nn = out.pop("_nn")
    if n < MIN_BOXES_FOR_EVIDENCE:
        out.update({k: np.zeros(m) for k in LOW_EVIDENCE_ZERO})
        return out
    out.update(_alignment(q, adx2, ady2, lw, lh))
    out.update(_periodicity(cx, cy, nn, n))
    seams, crossed = _seams(x0, y0, x1, y1, q, cx, cy, n, m)
    out.update(seams)
    out["tile_free"] = _tile_free(x0, y0, x1, y1, cx, cy)
    out["cross_min"] = _cross_min(q, n, crossed)
    return out


def _nearest(adx2, ady2, n, m) -> dict:
    """Clark-Evans ratio (Donnelly's edge correction for the unit-square image window)
    and the coefficient of variation of nearest-neighbour distances (window-free)."""
    if n < 2:
        nan = np.full(m, np.nan)
        return {"clark_evans": nan, "nn_cv": nan, "_nn": np.full((n, m), np.nan, np.float32)}
    # dx * dx + dy * dy in float32, computed in place: the same numbers, fewer temporaries
    d2, dy = adx2.astype(np.float32), ady2.astype(np.float32)
    np.multiply(d2, d2, out=d2)
    np.multiply(dy, dy, out=dy)
    d2 += dy
    d2[np.arange(n), np.arange(n)] = np.inf
    nn = np.sqrt(d2.min(0)) / (2 * QUANT)
    mean_nn = nn.mean(0)
    expected = 0.5 / np.sqrt(n) + (0.0514 + 0.041 / np.sqrt(n)) * 4.0 / n
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"clark_evans": mean_nn / expected, "nn_cv": nn.std(0) / mean_nn, "_nn": nn}


def _alignment(q, adx2, ady2, lw, lh) -> dict:
    """Rows, columns and shared baselines of similar-size, side-by-side partners.

    Thresholds are powers of two of the pair's summed size, so they are shifts:
    beside = |dx| > mean width / 2, same row = |dy| < ROW_TOL x mean height, same
    baseline = bottoms within BASELINE_TOL x mean height.
    """
    wq, hq = q[2] - q[0], q[3] - q[1]
    ws = wq[:, None, :] + wq[None, :, :]  # w_i + w_j
    hs = hq[:, None, :] + hq[None, :, :]
    # (n, n, m) masks are combined in place (&=) and thresholds shifted into one reused
    # buffer: the same booleans with a third fewer temporaries to allocate and fault in
    t = np.right_shift(ws, 1)
    beside = _within(lh, SIMILAR_SIZE, LOG_QUANT)
    beside &= adx2 > t  # never itself
    col = _within(lw, SIMILAR_SIZE, LOG_QUANT)
    col &= ady2 > np.right_shift(hs, 1, out=t)
    col &= adx2 < np.right_shift(ws, 2, out=t)
    row = ady2 < np.right_shift(hs, 2, out=t)
    row &= beside
    base = _absdiff(q[3]) < np.right_shift(hs, 5, out=t)
    base &= beside
    return {
        "row_align": _partners(row),
        "col_align": _partners(col),
        "baseline_align": _partners(base),
    }


def _periodicity(cx, cy, nn, n) -> dict:
    """Phase coherence of centre coordinates at spacings near the median NN distance,
    bias-corrected (Rayleigh) so random points score ~0 whatever their number."""
    spacing = _median(nn, n)
    freq = 2 * np.pi / (PERIOD_FACTORS[:, None] * spacing[None, :])  # (F, m)
    out = {}
    ph = np.empty((n, *freq.shape), np.float32)  # (n, F, m), reused: sin/cos dominate
    tr = np.empty_like(ph)
    for name, c in (("periodicity_x", cx), ("periodicity_y", cy)):
        np.multiply(c[:, None, :], freq[None, :, :], out=ph)
        r2 = np.square(np.cos(ph, out=tr).sum(0))
        r2 += np.square(np.sin(ph, out=tr).sum(0))
        # z rises with r2 and rounding keeps that order, so the best spacing is picked on
        # r2 first (fmax skips NaN, as the isfinite mask did) and z is taken once per image
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (np.fmax.reduce(r2, axis=0) / n - 1) / (n - 1)
        out[name] = np.clip(np.where(np.isfinite(z), z, 0.0), 0, 1)
    return out


def _median(nn: np.ndarray, n: int) -> np.ndarray:
    """Median over axis 0. For few boxes a compare-exchange network over the n rows
    (min/max of whole rows) beats ``np.sort`` along the short axis, which pays one call
    per image; both give the same order statistics (nn comes from integer offsets, so it
    is never NaN, where min/max and sort would disagree)."""
    if n > 10:
        srt = np.sort(nn, axis=0)
        return 0.5 * (srt[(n - 1) // 2] + srt[n // 2])
    r = list(nn)
    for rnd in range(n):  # odd-even transposition sort: n rounds sort n rows
        for i in range(rnd % 2, n - 1, 2):
            r[i], r[i + 1] = np.minimum(r[i], r[i + 1]), np.maximum(r[i], r[i + 1])
    return 0.5 * (r[(n - 1) // 2] + r[n // 2])


def _seams(x0, y0, x1, y1, q, cx, cy, n, m) -> tuple[dict, dict]:
    """Seams: the line carrying most box edges that no box crosses (mosaic tile borders),
    per axis; and how many quadrants the strongest vertical and horizontal seams cut the
    boxes into (four for a 2x2 mosaic).

    Candidate lines are the boxes' right (bottom) edges: a tile border is almost always
    where some box of the left (upper) tile ends. Left edges as extra candidates cost
    twice the work and did not change the calibration AUROCs (split A and B), for the
    seams and for the cuts alike.

    Cuts (``cut_x``, ``cut_y``): the most boxes with an edge on one line that no box
    crosses *along the segment those boxes span*, when at least two are on it. Unlike a
    seam the line need not cross the whole image: the tiles of a 9-image mosaic, or of a
    mosaic whose photos do not fill the canvas, meet at T-junctions, while natural
    objects rarely end at one common coordinate. Same pairwise arrays as the seams.
    """
    out, pos, crossed = {}, {}, {}
    cnt = np.uint8 if n < 255 else np.int32  # narrow counters: less memory traffic
    for axis, hi_, qlo, qhi, olo, ohi in (
        ("x", x1, q[0], q[2], q[1], q[3]),
        ("y", y1, q[1], q[3], q[0], q[2]),
    ):
        # offsets of every box's edges from the line at box i's far edge, shifted by
        # +QTOL so that "within tolerance" is one unsigned compare: 0 <= d + QTOL < 2 QTOL
        base = (qhi - QTOL)[None]
        dh, dl = qhi[:, None, :] - base, qlo[:, None, :] - base
        # an edge is on the line when 0 <= d < 2 QTOL: the smaller unsigned offset of the
        # two edges decides, one minimum instead of two compares and an or
        near = np.minimum(dh.view(np.uint16), dl.view(np.uint16))
        on = near < 2 * QTOL
        # crossed by a box starting before the line and ending after it; boxes starting
        # at or after it lie on the far side (box i itself only if it is tinier than QTOL)
        before = dl < 0
        crossing = before & (dh > 2 * QTOL)
        cross = crossing.any(0)
        crossed[axis] = cross  # far-edge lines crossed by a box: _cross_min's too
        n_far = (n - _count(before)).astype(cnt) - (qlo - qhi >= -QTOL).astype(cnt)
        inside = (hi_ > SEAM_MARGIN) & (hi_ < 1 - SEAM_MARGIN)
        ok = ~cross & (n_far >= 1) & inside
        strength = _count(on) * ok  # np.where is several times slower here
        # the cut: boxes clipped at one line share it exactly (both are cut at the same
        # coordinate), so "on" is tighter than for seams: CUT_TOL, still above the
        # rounding of labels to whole pixels of a 1000-px image; coincidences between
        # a crowded scene's objects fall by about the ratio of the tolerances
        near -= CUT_SHIFT
        on = np.less(near, 2 * CUT_QTOL, out=on)
        out[f"cut_{axis}"] = _cut(on, crossing, olo, ohi, inside)
        top = strength.max(0)
        out[f"seam_{axis}"] = top
        pos[axis] = _first_line(hi_, ok & (strength == top), top > 0)
    quad = ((cx > pos["x"]).view(np.uint8) << 1) | (cy > pos["y"]).view(np.uint8)
    valid = np.isfinite(pos["x"]) & np.isfinite(pos["y"])
    out["cross_cells"] = _distinct(quad, 4) * valid
    return out, crossed


def _cut(on, crossing, olo, ohi, inside) -> np.ndarray:
    """The largest cut per image: ``k >= 2`` boxes ``on`` an ``inside`` line that no box
    crosses along the segment they span (``crossing``: [box, line, image], updated).

    The segment's ends are a masked min and max over ``(n, n, m)``, taken as a product
    with the mask: offset by ``BIG``, edges are < 0 for the min and > 0 for the max (in
    int16), so the 0s off the mask never win and a line with no box on it ends at
    ``BIG`` (``-BIG``): the integers of ``np.where(on, olo, BIG).min(0)``, whose
    broadcast select ran about 10 times slower (``np.min(where=on)`` slower still).
    """
    k = _count(on)
    on16 = on.astype(np.int16)  # once: a same-type multiply is a third cheaper than a cast
    a = np.multiply(on16, (olo - BIG)[:, None, :]).min(0)
    a += BIG
    b = np.multiply(on16, (ohi + BIG)[:, None, :], out=on16).max(0)
    b -= BIG
    crossing &= olo[:, None, :] < b[None]
    crossing &= ohi[:, None, :] > a[None]
    return (k * (~crossing.any(0) & inside & (k >= 2))).max(0)


def _first_line(hi_: np.ndarray, best: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Lowest ``hi_`` among the ``best`` lines per image, NaN where none was ``found``.

    Branch-free on purpose: ``np.where`` on these irregular masks runs several times
    slower (mispredicted branches). Unselected lines become ``hi_ / False`` = inf (NaN
    for 0 or NaN coordinates, which ``fmin`` skips; a selected line is inside the image,
    never NaN), and ``keep / keep`` is 1 or NaN.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.fmin.reduce(hi_ / best, axis=0)
        keep = (found & np.isfinite(first)).astype(np.float32)
        return first * (keep / keep)


def _tile_free(x0, y0, x1, y1, cx, cy) -> np.ndarray:
    """Largest share of K x K tile borders (K = 2, 3) that no box crosses, when the boxes
    occupy nearly every tile; 0 when they do not spread over the tiles."""
    best = np.zeros(x0.shape[1])
    for k in (2, 3):
        lines = (np.arange(1, k) / k).astype(np.float32)[:, None, None]  # (k-1, 1, 1)
        cross_x = ((x0 < lines - SEAM_TOL) & (x1 > lines + SEAM_TOL)).any(1)  # (k-1, m)
        cross_y = ((y0 < lines - SEAM_TOL) & (y1 > lines + SEAM_TOL)).any(1)
        free = np.concatenate([~cross_x, ~cross_y], axis=0).mean(0)
        cell = np.clip(cx * k, 0, k - 1).astype(np.int8) * k + np.clip(cy * k, 0, k - 1).astype(
            np.int8
        )
        occupied = _distinct(cell, k * k)
        best = np.maximum(best, np.where(occupied >= k * k - (k - 1), free, 0.0))
    return best


CROSS_MARGIN = 0.15  # a mosaic's cross lies inside; free lines near the border are cheap
QCROSS = round(CROSS_MARGIN * QUANT)


def _free_lines(lo: np.ndarray, hi: np.ndarray, hi_crossed: np.ndarray):
    """Candidate lines (every box's near and far edge, ``(2n, m)`` int16) and whether
    each is free: inside the central band and crossed by no box (``SEAM_TOL`` slack).
    Between two groups of boxes any line in the gap splits them the same way; its two
    ends are a far and a near edge, and either may be the only one inside the band.
    Far edges are the seams' lines under the same crossing test: ``hi_crossed`` comes
    from ``_seams``, and only the near edges take an ``(n, n, m)`` pass here."""
    cand = np.concatenate([lo, hi], axis=0)
    cross = lo[:, None, :] < (lo - QTOL)[None]
    cross &= hi[:, None, :] > (lo + QTOL)[None]
    free = np.concatenate([~cross.any(0), ~hi_crossed], axis=0)
    free &= cand > QCROSS
    free &= cand < QUANT - QCROSS
    return cand, free


def _cross_min(q, n: int, crossed: dict) -> np.ndarray:
    """Fewest boxes in a quadrant of the most balanced free cross: the vertical line and
    the horizontal line, each crossed by no box, that split the boxes most evenly.

    A 4-image mosaic always has such a cross (its tiles' borders) with each tile's boxes
    in its quadrant; a natural scene with many boxes rarely does, and when it does one
    quadrant usually holds a stray box or two. Each axis' line is chosen on its own (the
    one leaving the most boxes on its smaller side): trying every pair of lines gave the
    same calibration AUROCs (split A and B) at several times the cost.
    """
    m = q[0].shape[1]
    sides = []
    for axis, lo, hi in (("x", q[0], q[2]), ("y", q[1], q[3])):
        c2 = lo + hi
        line, free = _free_lines(lo, hi, crossed[axis])
        before = c2[:, None, :] < 2 * line[None]  # [box, line, image]: centre before it
        k = _count(before).astype(np.int16)
        # the first line with the most boxes on its smaller side, as a max of
        # value * 1024 + (1023 - line): argmax along the short axis is several times slower
        # Not free: value -1. Taken as (value + 1) * free - 1, with the -1 folded into the
        # line term: the same keys as np.where(free, value, -1), whose select is slower.
        v = np.minimum(k, n - k)
        v += 1
        v *= free
        key = v.astype(np.int32)
        key *= 1024
        key += (1023 - 1024 - np.arange(k.shape[0], dtype=np.int32))[:, None]
        best = 1023 - (key.max(0) & 1023)  # (m,)
        at = (best, np.arange(m))  # the chosen line per image: compare again, no gather
        sides.append((c2 < 2 * line[at][None], free[at]))
    (left, fx), (top, fy) = sides
    quads = [left & top, left & ~top, ~left & top, ~left & ~top]
    low = np.minimum.reduce([_count(a) for a in quads])
    return low * (fx & fy)
