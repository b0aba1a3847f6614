"""The audit gate: is the share of grid-like images above a natural reference?

Single natural photos can be regular (a box of donuts, a parking lot), so the gate never
judges images one by one. It compares the *share* of grid-like images among judged images
(those with enough boxes) with the same share in a natural reference, overall and per
source. A dataset fails when the share exceeds the reference by more than
``max_grid_share`` *and* a one-sided binomial test says the excess is not luck, so a small
clean dataset cannot fail on two unlucky images while a 10% grid contamination cannot pass.

The reference is either another dataset's layout stats or the built-in COCO reference
(``reference_coco.json``: grid scores of the real COCO images shipped for development).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa

from analysis.grid_score import FAMILIES
from analysis.stat_tests import binom_sf, ks_2samp, mann_whitney_greater
from pipeline.core import arrow_kernels as kernels
from pipeline.core import defaults

# The gate reads its columns by name from any mapping of equal-length columns: the audit
# stage passes a dict of NumPy and Arrow columns (no pandas on the audit's path: its
# import and frame building were 0.3 s of a 1 s audit), other callers a pandas DataFrame.
Columns = Mapping

DEFAULT_REFERENCE = Path(__file__).with_name("reference_coco.json")
PIXELS = "pixels"  # the family of the image-space tiling check
MIN_WEIGHT = 1e-3  # never exactly 0: a sampler must still be able to draw every image


def column(cols: Columns, name: str, dtype=float) -> np.ndarray:
    """One numeric column as NumPy (from NumPy, Arrow or pandas alike)."""
    return np.asarray(cols[name], dtype=dtype)


def labels(col) -> tuple[np.ndarray, list[str]]:
    """Per-row integer codes of a string column and the sorted names they stand for.

    Arrow's dictionary encoding per chunk, the chunks' small dictionaries merged in
    Python: no Python string per row, however many rows.
    """
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    chunks = [c if isinstance(c, pa.Array) else pa.array(np.asarray(c, object)) for c in chunks]
    encoded = [kernels.dictionary_encode(c) for c in chunks if len(c)]
    names = sorted({n for e in encoded for n in e.dictionary.to_pylist()})
    where = {n: k for k, n in enumerate(names)}
    codes = [  # int32: half the memory of the default int64 for a per-image column
        np.array([where[n] for n in e.dictionary.to_pylist()], np.int32)[
            e.indices.to_numpy(zero_copy_only=False)
        ]
        for e in encoded
    ]
    return (np.concatenate(codes) if codes else np.zeros(0, np.int32)), names


def strings_at(col, rows) -> list[str]:
    """The values of a string column at a few rows."""
    rows = np.asarray(rows, np.int64)
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        return [str(v) for v in kernels.take(col, pa.array(rows, pa.int64())).to_pylist()]
    return [str(v) for v in np.asarray(col, object)[rows]]


def n_rows(cols: Columns) -> int:
    return len(cols["grid_score"])


def reference_from_stats(df: Columns, name: str) -> dict:
    """A reference is just the grid scores of its judged images (small, exact, re-usable)."""
    judged = column(df, "grid_score")[~column(df, "low_evidence", bool)]
    return {
        "name": name,
        "n_judged": int(judged.size),
        "scores": [round(float(s), 5) for s in np.sort(judged)],
    }


def load_reference(path: str | Path | None = None) -> dict:
    p = Path(path) if path else DEFAULT_REFERENCE
    ref = json.loads(p.read_text())
    ref["scores"] = np.asarray(ref["scores"], dtype=float)
    return ref


def _floats(values) -> np.ndarray:
    """A float column as stored (float32 stays float32: no float64 copy per image)."""
    values = np.asarray(values)
    return values if np.issubdtype(values.dtype, np.floating) else values.astype(float)


def at_least(values, threshold: float) -> np.ndarray:
    """``values >= threshold`` exactly as in float64, without a float64 copy of float32
    values: a float32 is >= ``threshold`` exactly when it is >= the smallest float32
    that is (NumPy would otherwise compare in float32, against ``threshold`` rounded)."""
    values = _floats(values)
    if values.dtype == np.float64:
        return values >= threshold
    t = values.dtype.type(threshold)
    if float(t) < threshold:
        t = np.nextafter(t, values.dtype.type(np.inf))
    return values >= t


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """``np.argsort(-scores, kind="stable")[:k]`` without sorting every image: a partition
    finds the k-th largest score, and only the images at or above it are sorted (ties in
    index order, as the stable sort gives them)."""
    neg = np.negative(_floats(scores))  # in the stored float type: the same order
    if k <= 0:
        return np.zeros(0, np.int64)
    if neg.size <= k:
        return np.argsort(neg, kind="stable")
    kth = np.partition(neg, k - 1)[k - 1]
    if np.isnan(kth):  # fewer than k real scores: the full sort orders the NaNs the same
        return np.argsort(neg, kind="stable")[:k]
    cand = np.flatnonzero(neg <= kth)
    return cand[np.argsort(neg[cand], kind="stable")][:k]


def _share_test(k: int, n: int, ref_share: float, max_share: float, alpha: float) -> dict:
    share = k / n if n else 0.0
    p = binom_sf(k, n, min(max(ref_share, 1e-6), 1 - 1e-6)) if n else 1.0
    excess = share - ref_share
    return {
        "n_judged": int(n),
        "n_grid_like": int(k),
        "share": share,
        "excess": excess,
        "binomial_pvalue": float(p),
        "fails": bool(excess > max_share and p < alpha),
    }


def holm(pvalues) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1): a source is
    blamed when its adjusted p is below alpha, which bounds the chance of blaming any
    clean source by alpha however many sources there are."""
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adj
    return out.tolist()


def comparison(scores: np.ndarray, ref_scores: np.ndarray) -> dict:
    """Two-sample tests of the judged score distributions (dataset vs reference)."""
    if scores.size == 0 or ref_scores.size == 0:
        return {"ks": None, "mann_whitney": None}
    # a reference stores its scores to 5 decimals: compare like with like, or the many
    # images tied at a family's floor score sit on both sides of their rounded value
    # sorted once: both tests sort again, which their timsort does in one pass over
    # sorted data (the gate's tests 25 -> 8 ms for 160,000 judged images)
    scores = np.round(scores, 5)
    scores.sort()
    ks, ks_p = ks_2samp(scores, ref_scores)
    mw, mw_p = mann_whitney_greater(scores, ref_scores)
    return {
        "ks": {"statistic": ks, "pvalue": ks_p, "method": "asymptotic"},
        "mann_whitney": {
            "statistic": mw,
            "pvalue": mw_p,
            "alternative": "dataset scores greater",
        },
    }


def grid_like(df: Columns, threshold: float) -> np.ndarray:
    return (~column(df, "low_evidence", bool)) & at_least(df["grid_score"], threshold)


STRUCTURED = ("lattice", "rows")  # explain a layout before the tile families do


def family_of(df: Columns, threshold: float) -> tuple[tuple, np.ndarray]:
    """The families scored (the pixel check adds its own when it ran) and, per image,
    the index of the one that explains it: the highest-scoring family, except that a
    lattice or rows score at or above ``threshold`` wins over the tile families (a lattice
    also has free lines and boxes ending on common lines, but it is not made of tiles).

    One family at a time into an int8 code (ties to the earlier family, as ``argmax``):
    a stacked float64 score matrix and an array of family names cost about 70 bytes an
    image, which at a million images outgrew the audit's whole streaming pass."""
    families = (*FAMILIES, PIXELS) if f"{PIXELS}_score" in df else FAMILIES
    n = n_rows(df)
    strong = np.zeros(n, bool)
    for f in STRUCTURED:
        strong |= np.asarray(df[f"{f}_score"]) >= threshold
    kinds = [np.asarray(df[f"{f}_score"]).dtype for f in families]  # float32 if stored so
    best = np.full(n, -np.inf, np.result_type(np.float32, *kinds))
    code = np.zeros(n, np.int8)
    weak = ~strong
    for k, f in enumerate(families):
        score = np.asarray(df[f"{f}_score"])
        better = score > best
        if f not in STRUCTURED:
            better &= weak
        # masked copies, not boolean indexing: the same values, a third of the time
        np.copyto(best, score, where=better, casting="same_kind")
        np.copyto(code, k, where=better, casting="unsafe")
    return families, code


def gate(
    df: Columns,
    reference: dict,
    *,
    threshold: float = defaults.GRID_SCORE_THRESHOLD,
    max_grid_share: float = defaults.MAX_GRID_SHARE,
    alpha: float = defaults.AUDIT_ALPHA,
    worst: int = defaults.AUDIT_WORST,
) -> dict:
    """The content of ``audit.json`` (minus remediation) for layout-stats columns."""
    ref_scores = np.asarray(reference["scores"], dtype=float)
    ref_share = float((ref_scores >= threshold).mean()) if ref_scores.size else 0.0
    flagged = grid_like(df, threshold)
    judged = ~column(df, "low_evidence", bool)
    scores = _floats(df["grid_score"])  # as stored: float64 only for the judged images below
    overall = _share_test(int(flagged.sum()), int(judged.sum()), ref_share, max_grid_share, alpha)
    per_source = {}
    n = n_rows(df)
    families, family = family_of(df, threshold)
    codes, names = labels(df["source"])
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    for k, src in enumerate(names):
        idx = order[bounds[k] : bounds[k + 1]]
        s = _share_test(
            int(flagged[idx].sum()), int(judged[idx].sum()), ref_share, max_grid_share, alpha
        )
        s["n_images"] = int(idx.size)
        counts = np.bincount(family[idx][flagged[idx]], minlength=len(families))
        s["families"] = {f: int(c) for f, c in zip(families, counts)}
        per_source[str(src)] = s
    # No minimum size: the binomial test alone decides whether a source is to blame
    # (15 of 15 grid-like images is p ~ 1e-20), with Holm's correction across sources
    # so that many small clean sources do not produce a false blame by luck.
    for s, p in zip(per_source.values(), holm([v["binomial_pvalue"] for v in per_source.values()])):
        s["holm_pvalue"] = p
        s["fails"] = bool(s["excess"] > max_grid_share and p < alpha)
    failing = [s for s, v in per_source.items() if v["fails"]]
    verdict = "fail" if overall["fails"] or failing else "pass"
    order = [i for i in top_k(scores, worst) if flagged[i]]
    boxes = np.asarray(df["n_boxes"])
    worst_rows = [
        {
            "image_id": image_id,
            "source": names[codes[i]],
            "n_boxes": int(boxes[i]),
            "grid_score": float(scores[i]),
            "family": families[family[i]],
        }
        for i, image_id in zip(order, strings_at(df["image_id"], order))
    ]
    result = {
        "verdict": verdict,
        "thresholds": {
            "grid_score": threshold,
            "max_grid_share": max_grid_share,
            "alpha": alpha,
            "min_boxes": defaults.MIN_BOXES_FOR_EVIDENCE,
            "source_test": "binomial, Holm-corrected across sources",
        },
        "n_images": n,
        "grid_share": {"overall": overall, "per_source": per_source},
        "failing_sources": failing,
        "reference": {
            "name": reference.get("name", "reference"),
            "n_judged": int(ref_scores.size),
            "grid_share": ref_share,
            "judged_by": reference.get("judged_by", "boxes"),
        },
        "comparison": {
            **comparison(scores[judged].astype(float), ref_scores),
            "share_difference": overall["excess"],
        },
        "worst_images": worst_rows,
    }
    result["summary"] = summary(result)
    return result


def summary(r: dict) -> str:
    """The verdict in plain words, for the CLI line and the report."""
    o, ref = r["grid_share"]["overall"], r["reference"]
    t = r["thresholds"]
    head = (
        f"{o['n_grid_like']} of {o['n_judged']} judged images ({o['share']:.1%}) look "
        f"grid-like (grid_score >= {t['grid_score']}), against {ref['grid_share']:.1%} in "
        f"the natural reference '{ref['name']}'."
    )
    if o["n_judged"] == 0:
        return "No image has enough boxes to judge its layout; nothing blocks training."
    if r["verdict"] == "pass":
        return head + (
            f" The excess ({o['excess']:+.1%}) is within the allowed "
            f"{t['max_grid_share']:.1%} or not significant: training may proceed."
        )
    srcs = ", ".join(r["failing_sources"]) or "no single source"
    return head + (
        f" That is {o['excess']:+.1%} above the reference (allowed "
        f"{t['max_grid_share']:.1%}). A model trained on it risks tiling its "
        f"outputs into grids. Sources to blame: {srcs}. Filter or down-weight the "
        "grid-like images (--remediate) before training."
    )


def downweight(df: Columns, flagged: np.ndarray, target_share: float) -> np.ndarray:
    """Sampling weights that bring the grid-like share down to ``target_share``.

    Grid-like images share one weight w <= 1 chosen so that, among judged images,
    w * n_grid / (w * n_grid + n_other) == target_share; everything else keeps 1.
    """
    judged = ~column(df, "low_evidence", bool)
    n_grid = int(flagged.sum())
    n_other = int((judged & ~flagged).sum())
    w = np.ones(n_rows(df))
    if n_grid:
        s = min(max(target_share, 0.0), 0.999)
        w[flagged] = max(MIN_WEIGHT, min(1.0, s * n_other / ((1 - s) * n_grid)))
    return w
