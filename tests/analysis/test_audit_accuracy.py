"""The accuracy goal, checked on calibration split B (weights were fitted on split A).

Per image: AUROC >= 0.95 for every grid kind against natural layouts with 4+ boxes.
Per dataset: real COCO passes with the defaults; COCO with 10% grid images fails.
"""

import numpy as np
import pandas as pd
import pytest

from analysis.audit import gate, load_reference
from analysis.augment_mosaic import ultralytics_mosaics
from analysis.calibration import (
    COCO_A,
    GRID_KINDS,
    NATURAL,
    calibration_split,
    coco_aspects,
    concat,
    lattice,
    load_coco_layouts,
    mosaics,
    natural_split,
    synthetic_natural,
)
from analysis.fit_weights import auroc
from analysis.grid_score import FAMILIES
from analysis.layout_stats import grid_scores_from_arrays

GOAL = 0.95
FAMILY_COLUMNS = [f"{f}_score" for f in FAMILIES]


def _scores(lay):
    return grid_scores_from_arrays(*lay.arrays())


def _frame(lay, source="d"):
    c = _scores(lay)
    return pd.DataFrame(
        {
            "image_id": [f"{source}:{k}" for k in range(lay.n_images)],
            "source": source,
            **{k: c[k] for k in ("n_boxes", "grid_score", "low_evidence", *FAMILY_COLUMNS)},
        }
    )


def _kind_aurocs(lay, negatives):
    c = _scores(lay)
    ev = c["n_boxes"] >= 4
    g = c["grid_score"]
    return {k: auroc(g[ev & (lay.kind == k)], g[ev & negatives]) for k in GRID_KINDS}


def test_every_grid_kind_separates_from_synthetic_natural_and_voc_like():
    lay = calibration_split("B", None)
    res = _kind_aurocs(lay, lay.kind == NATURAL)
    assert min(res.values()) >= GOAL, res
    voc = synthetic_natural(1500, 23, voc_like=1.0)
    both = concat([voc, lay.subset(lay.kind != NATURAL)])
    res = _kind_aurocs(both, both.kind == NATURAL)
    assert min(res.values()) >= GOAL, res


def test_every_grid_kind_separates_from_real_coco(shared_data):
    lay = calibration_split("B", shared_data)
    n_real = int((lay.kind == NATURAL).sum()) - 1500
    real = np.arange(lay.n_images) < n_real
    assert n_real > 150
    res = _kind_aurocs(lay, real)
    assert min(res.values()) >= GOAL, res


def test_naive_clark_evans_misses_mosaics(shared_data):
    """Why seams exist: the nearest-neighbour ratio alone ranks mosaics below chance-ish."""
    lay = calibration_split("B", shared_data)
    c = _scores(lay)
    ev = c["n_boxes"] >= 4
    ce = np.nan_to_num(c["clark_evans"])
    nat = ev & (lay.kind == NATURAL)
    assert auroc(ce[ev & (lay.kind == "mosaic")], ce[nat]) < 0.8
    assert auroc(c["grid_score"][ev & (lay.kind == "mosaic")], c["grid_score"][nat]) >= GOAL


@pytest.mark.parametrize("which", ["A", "B"])
def test_real_coco_passes_with_defaults(shared_data, which):
    df = _frame(natural_split(which, shared_data, n_synthetic=0), "coco")
    result = gate(df, load_reference())
    assert result["verdict"] == "pass", result["summary"]


@pytest.mark.parametrize("maker", ["lattice", "mosaic", "mosaic_aug"])
def test_coco_with_ten_percent_grid_images_fails(shared_data, maker):
    coco = natural_split("B", shared_data, n_synthetic=0)
    n_grid = round(coco.n_images / 9)  # 10% of the mixed set
    scenes = load_coco_layouts(shared_data / COCO_A[0])
    grid = {
        "lattice": lambda: lattice(n_grid, 7),
        "mosaic": lambda: mosaics(n_grid, 8, scenes),
        "mosaic_aug": lambda: ultralytics_mosaics(
            n_grid, 9, scenes, coco_aspects(shared_data / COCO_A[0])
        ),
    }[maker]()
    result = gate(_frame(concat([coco, grid]), "mixed"), load_reference())
    assert result["verdict"] == "fail", result["summary"]
    assert result["failing_sources"] == ["mixed"]


def test_synthetic_natural_alone_passes_and_contaminated_fails():
    nat = synthetic_natural(400, 31)
    ref = {"name": "synthetic", "scores": _scores(synthetic_natural(400, 32))["grid_score"]}
    ref["scores"] = ref["scores"][_scores(synthetic_natural(400, 32))["n_boxes"] >= 4]
    assert gate(_frame(nat), ref)["verdict"] == "pass"
    dirty = concat([nat, mosaics(45, 3, synthetic_natural(100, 33))])
    assert gate(_frame(dirty), ref)["verdict"] == "fail"
