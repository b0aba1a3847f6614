"""Per-image layout statistics, vectorised over every image at once.

Boxes are flattened with Arrow list offsets; every statistic is a segment reduction or
a reduction over the flat list of within-image box pairs (``analysis.segments``). Images
are processed in chunks bounded by their pair count, so memory stays flat however many
images there are, and no Python code runs per image or per box.

Public API (the evaluation stage calls it on *detected* boxes of generated images):

- ``layout_stats(records) -> pandas.DataFrame``: one row per record, columns
  ``image_id, source, n_boxes, grid_score, low_evidence`` plus every component.
- ``grid_scores_from_arrays(offsets, x0, y0, x1, y1) -> dict of arrays``: the same
  columns (minus ids) from flat normalised xyxy arrays.

Coordinates are normalised to [0, 1] (the record schema's convention), so the image is
the unit square and every tolerance below is a fraction of the image or of box size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analysis.grid_score import combine
from analysis.segments import Pairs, chunk_bounds, seg_mean, seg_median, seg_reduce, seg_std

MAX_PAIRS_PER_CHUNK = 4_000_000
SEAM_TOL = 0.003  # box edges within this (image fraction) of a line count as "on" it
SEAM_MARGIN = 0.08  # lines this close to the image border are not seams (clipped objects)
ROW_TOL = 0.25  # centres within ROW_TOL * mean height share a row
BASELINE_TOL = 0.08  # bottoms within BASELINE_TOL * mean height share a baseline
SIMILAR_SIZE = np.log(1.5)  # |log size ratio| under this counts as "similar"
PERIOD_FACTORS = np.geomspace(0.6, 2.6, 13)  # candidate spacings, in units of median NN

COMPONENTS = [
    "cx_mean", "cy_mean", "cx_std", "cy_std", "log_area_mean", "log_area_std",
    "clark_evans", "nn_cv", "row_align", "col_align", "baseline_align",
    "size_homogeneity", "periodicity_x", "periodicity_y", "seam_x", "seam_y", "seam_both_x", "seam_both_y", "cross_cells", "tile_free",
]


def _chunk_stats(offsets, x0, y0, x1, y1) -> dict:
    """All components for one chunk of images (offsets start at 0)."""
    counts = np.diff(offsets)
    n = counts.astype(np.float64)
    w = np.maximum(x1 - x0, 1e-6)
    h = np.maximum(y1 - y0, 1e-6)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    la = np.log(w * h)
    p = Pairs(offsets)
    i, j = p.i, p.j
    other = i != j
    out = {
        "cx_mean": seg_mean(cx, offsets), "cy_mean": seg_mean(cy, offsets),
        "cx_std": seg_std(cx, offsets), "cy_std": seg_std(cy, offsets),
        "log_area_mean": seg_mean(la, offsets), "log_area_std": seg_std(la, offsets),
    }
    out["size_homogeneity"] = np.exp(-np.nan_to_num(out["log_area_std"], nan=0.0))

    # Nearest-neighbour regularity (Clark-Evans with Donnelly's edge correction on the
    # unit-square image window) and the spread of NN distances, which is window-free.
    dx, dy = cx[j] - cx[i], cy[j] - cy[i]
    d = np.where(other, np.hypot(dx, dy), np.inf)
    nn = p.reduce(np.minimum, d)
    nn = np.where(np.isfinite(nn), nn, np.nan)
    mean_nn = seg_mean(nn, offsets)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = 0.5 / np.sqrt(n) + (0.0514 + 0.041 / np.sqrt(n)) * 4.0 / n
        out["clark_evans"] = mean_nn / expected
        out["nn_cv"] = seg_std(nn, offsets) / mean_nn

    # Row / column / baseline alignment with similar-size, side-by-side partners.
    mh, mw = (h[i] + h[j]) / 2, (w[i] + w[j]) / 2
    sim_h = np.abs(np.log(h[i] / h[j])) < SIMILAR_SIZE
    sim_w = np.abs(np.log(w[i] / w[j])) < SIMILAR_SIZE
    beside = np.abs(dx) > 0.5 * mw
    above = np.abs(dy) > 0.5 * mh
    row = other & sim_h & beside & (np.abs(dy) < ROW_TOL * mh)
    col = other & sim_w & above & (np.abs(dx) < ROW_TOL * mw)
    base = other & sim_h & beside & (np.abs(y1[j] - y1[i]) < BASELINE_TOL * mh)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["row_align"] = seg_mean((p.count(row) >= 2).astype(float), offsets)
        out["col_align"] = seg_mean((p.count(col) >= 2).astype(float), offsets)
        out["baseline_align"] = seg_mean((p.count(base) >= 2).astype(float), offsets)

    # Periodicity: phase coherence of centre coordinates at spacings near the median NN
    # distance, bias-corrected so random points score ~0 whatever their number.
    spacing = seg_median(nn, offsets)
    owner = np.repeat(np.arange(counts.size), counts)
    for name, c in (("periodicity_x", cx), ("periodicity_y", cy)):
        s = spacing[owner][:, None] * PERIOD_FACTORS[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            ph = np.exp(2j * np.pi * c[:, None] / s)
        ph = np.nan_to_num(ph)
        res = np.abs(seg_reduce(np.add, ph, offsets))
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (res**2 / n[:, None] - 1) / (n[:, None] - 1)
        out[name] = np.clip(np.nanmax(np.where(np.isfinite(z), z, -1), axis=1), 0, 1)

    # Seams: a line carrying several box edges that no box crosses (mosaic tile borders).
    # A tile border is touched from both sides (boxes ending and starting on it), and
    # the two borders of a 2x2 mosaic cut the boxes into four non-empty quadrants.
    pos = {}
    for name, lo, hi in (("x", x0, x1), ("y", y0, y1)):
        best = np.zeros(counts.size)
        both = np.zeros(counts.size)
        where = np.full(counts.size, np.nan)
        for edge, sign in ((hi, 1), (lo, -1)):
            c = edge[i]
            end_on, start_on = np.abs(hi[j] - c) < SEAM_TOL, np.abs(lo[j] - c) < SEAM_TOL
            cross = (lo[j] < c - SEAM_TOL) & (hi[j] > c + SEAM_TOL)
            far = (lo[j] >= c - SEAM_TOL) if sign > 0 else (hi[j] <= c + SEAM_TOL)
            n_on = p.count(end_on | start_on)
            n_cross, n_far = p.count(cross), p.count(far & other)
            ok = (n_cross == 0) & (n_far >= 1) & (edge > SEAM_MARGIN) & (edge < 1 - SEAM_MARGIN)
            strength = np.where(ok, n_on, 0)
            top = seg_reduce(np.maximum, strength, offsets)
            better = top > best
            # position of the strongest candidate: first box edge reaching the maximum
            hit = ok & (strength == np.repeat(top, counts))
            first = seg_reduce(np.minimum, np.where(hit, edge, np.inf), offsets, empty=np.inf)
            where = np.where(better & np.isfinite(first), first, where)
            best = np.maximum(best, top)
            sides = np.minimum(p.count(end_on), p.count(start_on))
            both = np.maximum(both, seg_reduce(np.maximum, np.where(ok, sides, 0), offsets))
        out[f"seam_{name}"] = best
        out[f"seam_both_{name}"] = both
        pos[name] = where
    owner_box = np.repeat(np.arange(counts.size), counts)
    px, py = pos["x"][owner_box], pos["y"][owner_box]
    quad = (cx > px).astype(int) * 2 + (cy > py).astype(int)
    occupied = np.zeros((counts.size, 4), bool)
    valid = np.isfinite(px) & np.isfinite(py)
    occupied[owner_box[valid], quad[valid]] = True
    out["cross_cells"] = occupied.sum(axis=1).astype(float)
    out["tile_free"] = _tile_free(offsets, x0, y0, x1, y1)
    return out


def _tile_free(offsets, x0, y0, x1, y1) -> np.ndarray:
    """Largest share of K x K tile borders (K = 2, 3) that no box crosses, when every
    tile row and column holds a box; 0 when the boxes do not spread over the tiles."""
    best = np.zeros(offsets.size - 1)
    for k in (2, 3):
        lines = np.arange(1, k) / k
        tol = SEAM_TOL
        crossx = (x0[:, None] < lines - tol) & (x1[:, None] > lines + tol)
        crossy = (y0[:, None] < lines - tol) & (y1[:, None] > lines + tol)
        free = np.concatenate(
            [seg_reduce(np.add, crossx.astype(np.int32), offsets) == 0,
             seg_reduce(np.add, crossy.astype(np.int32), offsets) == 0], axis=1
        ) if x0.size else np.zeros((offsets.size - 1, 2 * (k - 1)), bool)
        cell = np.clip((x0 + x1) / 2 * k, 0, k - 1).astype(int) * k + np.clip(
            (y0 + y1) / 2 * k, 0, k - 1).astype(int)
        occupied = np.zeros((offsets.size - 1, k * k), bool)
        owner = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
        occupied[owner, cell] = True
        spread = occupied.sum(axis=1) >= k * k - (k - 1)
        best = np.maximum(best, np.where(spread, free.mean(axis=1), 0.0))
    return best


def grid_scores_from_arrays(offsets, x0, y0, x1, y1, *, max_pairs: int = MAX_PAIRS_PER_CHUNK,
                            progress_bar=None) -> dict:
    """Every component, ``n_boxes``, ``grid_score`` and ``low_evidence`` per image.

    ``offsets`` has one more entry than there are images; box k of image m is at flat
    position ``offsets[m] + k``. Chunks are bounded by within-image pair count.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    arrs = [np.asarray(a, dtype=np.float64) for a in (x0, y0, x1, y1)]
    counts = np.diff(offsets)
    parts = []
    bounds = chunk_bounds(counts, max_pairs)
    for a, b in (progress_bar(bounds) if progress_bar else bounds):
        o = offsets[a : b + 1]
        sl = slice(int(o[0]), int(o[-1]))
        parts.append(_chunk_stats(o - o[0], *(v[sl] for v in arrs)))
    cols = {k: np.concatenate([pt[k] for pt in parts]) if parts else np.zeros(0)
            for k in COMPONENTS}
    cols["n_boxes"] = counts
    cols.update(combine(cols))
    return cols


def flatten_boxes(records: pa.Table) -> tuple[np.ndarray, ...]:
    """(offsets, x0, y0, x1, y1) of a records table, zero-copy where Arrow allows."""
    boxes = records.column("boxes").combine_chunks()
    if isinstance(boxes, pa.ChunkedArray):  # an empty table keeps zero chunks
        boxes = pa.array([], boxes.type)
    boxes = boxes.fill_null([]) if boxes.null_count else boxes
    offsets = np.asarray(boxes.offsets, dtype=np.int64)
    flat = pc.list_flatten(boxes)
    base = offsets[0]
    cols = [np.asarray(flat.field(k), dtype=np.float64) for k in ("x0", "y0", "x1", "y1")]
    return (offsets - base, *cols)


def layout_stats(records: pa.Table, **kwargs) -> pd.DataFrame:
    """One row per record: ids, ``n_boxes``, ``grid_score``, ``low_evidence``, components."""
    offsets, x0, y0, x1, y1 = flatten_boxes(records)
    cols = grid_scores_from_arrays(offsets, x0, y0, x1, y1, **kwargs)
    df = pd.DataFrame({
        "image_id": records.column("image_id").to_pandas(),
        "source": records.column("source").to_pandas(),
        "n_boxes": cols.pop("n_boxes").astype(np.int32),
        "grid_score": cols.pop("grid_score"),
        "low_evidence": cols.pop("low_evidence"),
    })
    for k, v in cols.items():
        df[k] = v
    return df
