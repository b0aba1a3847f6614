"""Layout components for a block of images that all hold the same number of boxes.

``analysis.layout_stats`` buckets images by box count, so every block is a dense
``(n, m)`` array (image axis last): no gathers, no padding, no per-image Python. The
per-box components are NumPy over those arrays; the within-image pairwise ones (every
pair of boxes: nearest neighbours, alignment, seams, cuts, the free cross) are one
compiled pass (``analysis.layout_kernels``). Pairwise work is in int16 multiples of
1/QUANT (float32 for distances): ample for tolerances of 1e-3.
"""

from __future__ import annotations

import numpy as np

from analysis.layout_kernels import pairwise_block
from pipeline.core.defaults import MIN_BOXES_FOR_EVIDENCE

SEAM_TOL = 0.003  # box edges within this (image fraction) of a line count as "on" it
SEAM_MARGIN = 0.08  # lines this close to the image border are not seams (clipped objects)
# Alignment (analysis/_layout_kernels.c): shifts of the pair's summed sizes, so each is 2**-k
ROW_TOL = 0.25  # centres within ROW_TOL * mean height share a row
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
# The free cross (cross_min): the fewest boxes in a quadrant of the most balanced cross of
# two box-edge lines that no box crosses, each line chosen on its own as the one leaving
# the most boxes on its smaller side (trying every pair of lines gave the same
# calibration AUROCs, split A and B, at several times the cost). A 4-image mosaic always
# has such a cross (its tiles' borders) with each tile's boxes in its quadrant; a natural
# scene with many boxes rarely does, and when it does one quadrant usually holds a stray
# box or two.
CROSS_MARGIN = 0.15  # a mosaic's cross lies inside; free lines near the border are cheap
QCROSS = round(CROSS_MARGIN * QUANT)
PAIR_TOLERANCES = {  # the compiled pass's tolerances, in its quantised units
    "qtol": QTOL,
    "cut_qtol": CUT_QTOL,
    "cut_shift": int(CUT_SHIFT),
    "qcross": QCROSS,
    "quant": QUANT,
    "big": int(BIG),
    "size_tol": round(SIMILAR_SIZE * LOG_QUANT),
    # |2 dy| < (h_i + h_j) >> k, i.e. |dy| < 2**-k x mean height (centres); bottoms: 2**(1-k)
    "row_shift": round(np.log2(1 / ROW_TOL)),
    "base_shift": round(np.log2(2 / BASELINE_TOL)),
}


def _quantise(a: np.ndarray) -> np.ndarray:
    return np.rint(a * QUANT).astype(np.int16)


def _distinct(cell: np.ndarray, k: int) -> np.ndarray:
    """How many of the values 0..k-1 (k <= 16) occur along axis 0: one bit per value,
    or-reduced and counted, instead of k compare-and-any passes."""
    c = cell.astype(np.uint16)  # negatives wrap to large values: no cell (NaN input)
    bits = np.left_shift(np.uint16(1), c)
    bits *= c < k
    return np.bitwise_count(np.bitwise_or.reduce(bits, axis=0))


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
    if n < 2:
        nan = np.full(m, np.nan)
        out.update({"clark_evans": nan, "nn_cv": nan})
        out.update({k: np.zeros(m) for k in LOW_EVIDENCE_ZERO})
        return out
    evidence = n >= MIN_BOXES_FOR_EVIDENCE
    logs = [np.rint(a * LOG_QUANT).astype(np.int16) for a in (lw, lh)] if evidence else [None] * 2
    inside = (
        [(a > SEAM_MARGIN) & (a < 1 - SEAM_MARGIN) for a in (x1, y1)] if evidence else [None] * 2
    )
    pairs = pairwise_block(q, *logs, *inside, evidence, PAIR_TOLERANCES)
    nn = np.sqrt(pairs["d2min"]) / (2 * QUANT)
    out.update(_nearest(nn, n))
    if not evidence:
        out.update({k: np.zeros(m) for k in LOW_EVIDENCE_ZERO})
        return out
    for name, key in (("row_align", "row"), ("col_align", "col"), ("baseline_align", "base")):
        out[name] = pairs[key] / n  # the share of boxes with two or more partners
    out.update(_periodicity(cx, cy, nn, n))
    out.update(_seams(x1, y1, cx, cy, pairs))
    out["tile_free"] = _tile_free(x0, y0, x1, y1, cx, cy)
    out["cross_min"] = pairs["cross_min"]
    return out


def _nearest(nn: np.ndarray, n: int) -> dict:
    """Clark-Evans ratio (Donnelly's edge correction for the unit-square image window)
    and the coefficient of variation of nearest-neighbour distances (window-free)."""
    mean_nn = nn.mean(0)
    expected = 0.5 / np.sqrt(n) + (0.0514 + 0.041 / np.sqrt(n)) * 4.0 / n
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"clark_evans": mean_nn / expected, "nn_cv": nn.std(0) / mean_nn}


@np.errstate(invalid="ignore", divide="ignore")
def _periodicity(cx, cy, nn, n) -> dict:
    """Phase coherence of centre coordinates at spacings near the median NN distance,
    bias-corrected (Rayleigh) so random points score ~0 whatever their number.

    Repeated boxes (common in noisy labels) make the median spacing 0: the frequencies
    are infinite and the phases NaN, which scores 0 here, without NumPy's warnings on
    the user's terminal."""
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


def _seams(x1, y1, cx, cy, pairs: dict) -> dict:
    """Seams: the line carrying most box edges that no box crosses (mosaic tile borders),
    per axis; and how many quadrants the strongest vertical and horizontal seams cut the
    boxes into (four for a 2x2 mosaic). Cuts (``cut_x``, ``cut_y``): the most boxes with
    an edge on one line that no box crosses *along the segment those boxes span*, when at
    least two are on it. Both are counted by the compiled pass (``analysis.layout_kernels``):
    here the strongest seam is picked and placed.

    Candidate lines are the boxes' right (bottom) edges: a tile border is almost always
    where some box of the left (upper) tile ends. Left edges as extra candidates cost
    twice the work and did not change the calibration AUROCs (split A and B), for the
    seams and for the cuts alike.

    Unlike a seam, a cut's line need not cross the whole image: the tiles of a 9-image
    mosaic, or of a mosaic whose photos do not fill the canvas, meet at T-junctions, while
    natural objects rarely end at one common coordinate. Boxes clipped at one line share
    it exactly, so a cut's "on" is tighter than a seam's: ``CUT_TOL``, still above the
    rounding of labels to whole pixels of a 1000-px image.
    """
    out, pos = {}, {}
    for axis, hi_ in (("x", x1), ("y", y1)):
        strength = pairs[f"strength_{axis}"]  # 0 for lines that cannot be seams
        top = strength.max(0)
        out[f"seam_{axis}"] = top
        out[f"cut_{axis}"] = pairs[f"cut_{axis}"]
        pos[axis] = _first_line(hi_, strength == top, top > 0)
    quad = ((cx > pos["x"]).view(np.uint8) << 1) | (cy > pos["y"]).view(np.uint8)
    valid = np.isfinite(pos["x"]) & np.isfinite(pos["y"])
    out["cross_cells"] = _distinct(quad, 4) * valid
    return out


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
