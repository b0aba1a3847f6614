"""Fit and check the ``pixels`` family weights (``analysis.pixel_audit.PIXEL_WEIGHTS``).

``python -m analysis.pixel_fit ../shared/data`` fits on 2x2/3x3 composites of the
coco128 train photos against those photos, moves the bias so that ``FALSE_ALARMS`` of
the photos reach the default threshold, and prints the AUROC on train and on the
held-out val split. Kept apart from ``pixel_audit`` so the audit never imports SciPy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from analysis.image_grid import tiling_scores
from analysis.pixel_audit import FALSE_ALARMS, composites, pixel_score
from pipeline.core.defaults import GRID_SCORE_THRESHOLD


def _parts(images: list) -> dict:
    return tiling_scores(images)


def fit(shared_data: Path) -> None:
    """Fit the weights on coco128 train, print the AUROC on train and val."""
    from PIL import Image
    from scipy.optimize import minimize

    from analysis.fit_weights import auroc

    def split(name, seed):
        files = sorted((shared_data / "coco128" / "images" / name).glob("*.jpg"))
        photos = [Image.open(f).convert("RGB") for f in files]
        return _parts(photos), _parts(composites(photos, 200, seed))

    (tp, tc), (vp, vc) = split("train2017", 0), split("val2017", 1)
    x = np.r_[tp["tiling"], tc["tiling"]][:, None]
    y = np.r_[np.zeros(len(tp["tiling"])), np.ones(len(tc["tiling"]))]
    w = np.where(y == 1, (y == 0).sum() / (y == 1).sum(), 1.0)

    def loss(b):
        z = b[0] + x @ b[1:]
        return float(
            (w * (np.logaddexp(0, z) - y * z)).sum() / w.sum() + 0.002 * (b[1:] ** 2).sum()
        )

    b = minimize(loss, np.zeros(2), method="L-BFGS-B").x
    # move the bias: the (1 - FALSE_ALARMS) quantile of train photos sits on the threshold
    q = np.quantile(tp["tiling"], 1 - FALSE_ALARMS)
    bias = float(np.log(GRID_SCORE_THRESHOLD / (1 - GRID_SCORE_THRESHOLD)) - b[1] * q)
    print(
        "fitted", b.round(2), "PIXEL_WEIGHTS =", (round(bias, 2), {"tiling": round(float(b[1]), 2)})
    )
    for name, (p, c) in (("train", (tp, tc)), ("val", (vp, vc))):
        sp, sc = pixel_score(p), pixel_score(c)
        print(
            f"{name}: AUROC {auroc(sc, sp):.3f}; photos >= 0.6: {(sp >= 0.6).mean():.1%}, "
            f"composites >= 0.6: {(sc >= 0.6).mean():.1%} (weights in use)"
        )


if __name__ == "__main__":
    fit(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data"))
