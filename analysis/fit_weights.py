"""Refit the grid-score weights on calibration split A and check them on split B.

Run ``python -m analysis.fit_weights [SHARED_DATA]``. It prints the per-family logistic
weights (to paste into ``analysis.grid_score.WEIGHTS``) and the per-kind AUROC on both
splits, so a change to a component can be re-calibrated honestly in one command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.stats import rankdata

from analysis.calibration import GRID_KINDS, NATURAL, calibration_split, concat
from analysis.grid_score import FAMILIES, WEIGHTS, _features, combine
from analysis.layout_stats import grid_scores_from_arrays
from pipeline.core.defaults import MIN_BOXES_FOR_EVIDENCE

# Which generated kinds each family detector is trained to catch.
POSITIVES = {
    "lattice": ("lattice", "board"),
    "rows": ("rows", "board"),
    "mosaic": ("mosaic",),
    "mosaic_aug": ("mosaic_aug",),
}
L2 = 0.002


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    r = rankdata(np.concatenate([pos, neg]))
    n1, n0 = len(pos), len(neg)
    return float((r[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    def loss(beta):
        z = beta[0] + x @ beta[1:]
        ll = np.logaddexp(0, z) - y * z
        return float((w * ll).sum() / w.sum() + L2 * (beta[1:] ** 2).sum())

    return minimize(loss, np.zeros(x.shape[1] + 1), method="L-BFGS-B").x


def fit(shared_data: Path | None) -> dict:
    lay = calibration_split("A", shared_data)
    cols = grid_scores_from_arrays(*lay.arrays())
    feats = _features(cols)
    ev = cols["n_boxes"] >= MIN_BOXES_FOR_EVIDENCE
    real = np.arange(lay.n_images) < int((lay.kind == NATURAL).sum()) - 1500
    weights = {}
    for fam in FAMILIES:
        names = list(WEIGHTS[fam][1])
        x = np.stack([feats[k] for k in names], axis=1)
        pos = np.isin(lay.kind, POSITIVES[fam])
        m = ev & (pos | (lay.kind == NATURAL))
        # Real COCO layouts count as much as all synthetic natural ones together.
        w = np.where(real, 1500 / max(real[m].sum(), 1), 1.0)
        w = np.where(pos, (~pos & m).sum() / max((pos & m).sum(), 1) * 1.0, w)
        beta = _logistic(x[m], pos[m].astype(float), w[m])
        weights[fam] = (
            round(float(beta[0]), 2),
            {k: round(float(b), 2) for k, b in zip(names, beta[1:])},
        )
    return weights


def report(shared_data: Path | None, weights: dict = WEIGHTS) -> None:
    for split in "AB":
        lay = calibration_split(split, shared_data)
        cols = grid_scores_from_arrays(*lay.arrays())
        cols.update(combine(cols, weights))
        ev = cols["n_boxes"] >= MIN_BOXES_FOR_EVIDENCE
        nat = ev & (lay.kind == NATURAL)
        real = nat & (np.arange(lay.n_images) < int((lay.kind == NATURAL).sum()) - 1500)
        row = [
            f"{k}: {auroc(cols['grid_score'][ev & (lay.kind == k)], cols['grid_score'][nat]):.3f}"
            f" (real {auroc(cols['grid_score'][ev & (lay.kind == k)], cols['grid_score'][real]):.3f})"
            for k in GRID_KINDS
        ]
        print(split, *row)


def build_reference(shared_data: Path) -> dict:
    """The built-in COCO reference: judged grid scores of every real COCO image we ship
    for development (both val subsets and the coco128 train json)."""
    from analysis.audit import DEFAULT_REFERENCE
    from analysis.calibration import natural_split

    lay = concat([natural_split("A", shared_data, 0), natural_split("B", shared_data, 0)])
    cols = grid_scores_from_arrays(*lay.arrays())
    scores = np.sort(cols["grid_score"][~cols["low_evidence"]])
    ref = {
        "name": "coco-2017 (val subsets + train first128)",
        "n_judged": int(scores.size),
        "scores": [round(float(s), 5) for s in scores],
    }
    DEFAULT_REFERENCE.write_text(json.dumps(ref, indent=1) + "\n")
    return ref


if __name__ == "__main__":
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    if "--reference" in sys.argv:
        print(build_reference(data)["n_judged"], "reference scores written")
        sys.exit(0)
    fitted = fit(data)
    print(fitted)
    report(data, fitted)
