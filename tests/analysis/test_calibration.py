"""Calibration builders are deterministic, valid and keep the two splits apart."""

import json

import numpy as np
import pytest

from analysis.calibration import (
    COCO_A,
    COCO_B,
    GRID_KINDS,
    NATURAL,
    boards,
    calibration_split,
    coco_image_ids,
    lattice,
    load_coco_layouts,
    mosaics,
    natural_split,
    shelf_rows,
    synthetic_natural,
)

BUILDERS = [
    lambda seed: synthetic_natural(80, seed),
    lambda seed: lattice(40, seed),
    lambda seed: shelf_rows(40, seed),
    lambda seed: boards(40, seed),
    lambda seed: mosaics(40, seed, synthetic_natural(30, 99)),
]


def _same(a, b):
    return all(
        np.array_equal(getattr(a, k), getattr(b, k))
        for k in ("offsets", "x0", "y0", "x1", "y1", "kind")
    )


@pytest.mark.parametrize("build", BUILDERS)
def test_builders_are_deterministic_and_valid(build):
    a, b, c = build(1), build(1), build(2)
    assert _same(a, b)
    assert not _same(a, c)
    assert a.offsets[0] == 0 and a.offsets[-1] == a.x0.size
    assert np.all(np.diff(a.offsets) >= 0)
    assert np.all((a.x0 >= 0) & (a.x1 <= 1) & (a.y0 >= 0) & (a.y1 <= 1))
    assert np.all((a.x1 > a.x0) & (a.y1 > a.y0))


def test_grid_builders_yield_enough_evidence():
    for build in BUILDERS[1:]:
        lay = build(3)
        assert (np.diff(lay.offsets) >= 4).mean() > 0.8


def test_mosaic_boxes_stay_inside_their_tiles():
    # every box of an equal-tile 3x3 mosaic must lie inside one third of the image
    lay = mosaics(200, 4, synthetic_natural(50, 7))
    w, h = lay.x1 - lay.x0, lay.y1 - lay.y0
    assert (w <= 0.5 + 1e-9).all() and (h <= 0.5 + 1e-9).all()


def test_synthetic_splits_differ_and_are_reproducible():
    a1, a2, b = (
        calibration_split("A", None, 50, 100),
        calibration_split("A", None, 50, 100),
        calibration_split("B", None, 50, 100),
    )
    assert _same(a1, a2) and not _same(a1, b)
    kinds = set(a1.kind.tolist())
    assert kinds == {NATURAL, *GRID_KINDS}


def test_coco_loader_skips_crowd_and_splits_are_disjoint(shared_data):
    path = shared_data / COCO_A[0]
    d = json.loads(path.read_text())
    lay = load_coco_layouts(path)
    assert lay.n_images == len(d["images"])
    n_non_crowd = sum(1 for a in d["annotations"] if not a["iscrowd"])
    assert lay.x0.size <= n_non_crowd and lay.x0.size >= n_non_crowd - 5  # degenerate boxes
    # split B leaves out the one image the two val subsets share
    b = natural_split("B", shared_data, n_synthetic=0)
    n_b = sum(len(json.loads((shared_data / rel).read_text())["images"]) for rel in COCO_B)
    assert b.n_images == n_b - len(coco_image_ids(path) & coco_image_ids(shared_data / COCO_B[0]))
