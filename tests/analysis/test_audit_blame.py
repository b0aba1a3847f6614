"""Blame by the binomial test alone (#12 item 6): no minimum source size, Holm across
sources. Frames are hand-made, so every expected verdict is known exactly."""

import numpy as np
import pandas as pd

from analysis.audit import gate, holm
from analysis.grid_score import FAMILIES

REF = {"name": "ref", "scores": np.r_[np.zeros(191), np.ones(9)]}  # grid share 4.5%


def _frame(per_source: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """source -> (judged images, grid-like among them); grid-like score 0.9, others 0.1."""
    rows = []
    for src, (n, k) in per_source.items():
        for i in range(n):
            rows.append((f"{src}:{i}", src, 0.9 if i < k else 0.1))
    ids, srcs, scores = zip(*rows)
    scores = np.array(scores)
    return pd.DataFrame(
        {
            "image_id": ids,
            "source": srcs,
            "n_boxes": 6,
            "grid_score": scores,
            "low_evidence": False,
            **{f"{f}_score": scores if f == "lattice" else 0.0 for f in FAMILIES},
        }
    )


def test_a_source_of_15_judged_images_all_grid_like_is_named():
    r = gate(_frame({"coco": (300, 12), "scraped": (15, 15)}), REF)
    assert r["verdict"] == "fail"
    assert r["failing_sources"] == ["scraped"]
    assert "scraped" in r["summary"] and "no single source" not in r["summary"]


def test_the_only_source_15_of_15_is_named():
    r = gate(_frame({"web": (15, 15)}), REF)
    assert r["failing_sources"] == ["web"]


def test_many_small_clean_sources_are_not_blamed_for_luck():
    # 2 of 2 grid-like is p = 0.045**2 = 0.002 < alpha alone, but one of 60 sources
    # showing it is expected luck: Holm multiplies by 60, so nobody is blamed
    sources = {f"s{k}": (2, 0) for k in range(59)} | {"lucky": (2, 2)}
    r = gate(_frame(sources), REF)
    assert r["failing_sources"] == []
    assert r["grid_share"]["per_source"]["lucky"]["binomial_pvalue"] < 0.01


def test_holm_adjusts_step_down_and_stays_monotone():
    # sorted p 0.01, 0.02, 0.04 -> 0.03, 0.04, 0.04 (the max keeps it monotone)
    assert np.allclose(holm([0.04, 0.01, 0.02]), [0.04, 0.03, 0.04])
    assert holm([0.9, 0.8]) == [1.0, 1.0]
    assert holm([]) == []
