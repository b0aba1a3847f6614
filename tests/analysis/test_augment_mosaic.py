"""Mosaic augmentation (#12 item 3): the generator's geometry and the two statistics that
catch it (``cut_*``: boxes truncated at one line; ``cross_min``: a free cross with every
quadrant occupied), each on hand-made layouts with a known answer."""

import numpy as np
import pytest

from analysis.augment_mosaic import photo_aspects, ultralytics_mosaics
from analysis.calibration import MOSAIC_AUG, Layouts, synthetic_natural
from analysis.layout_stats import grid_scores_from_arrays


def _one(boxes):
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return grid_scores_from_arrays(np.array([0, len(b)]), b[:, 0], b[:, 1], b[:, 2], b[:, 3])


# three boxes end at x = 0.4 and one starts there, spread over the height: a tile border
CUT = [(0.1, 0.1, 0.4, 0.2), (0.2, 0.45, 0.4, 0.55), (0.25, 0.7, 0.4, 0.9), (0.4, 0.3, 0.7, 0.4)]


def test_cut_counts_boxes_on_a_line_no_box_crosses_along_their_segment():
    s = _one(CUT)
    assert s["cut_x"][0] == 4
    # a box across x = 0.4 inside the segment the four boxes span (y 0.1-0.9) breaks it
    assert _one(CUT + [(0.3, 0.6, 0.5, 0.65)])["cut_x"][0] < 4
    # the same box below the segment does not: tiles meet at T-junctions
    assert _one(CUT + [(0.3, 0.92, 0.5, 0.97)])["cut_x"][0] == 4


def test_cut_ignores_lone_edges_near_misses_and_the_image_border():
    apart = [(0.1, 0.1, 0.3, 0.2), (0.5, 0.5, 0.6, 0.7), (0.7, 0.1, 0.9, 0.3)]
    assert _one(apart + [(0.62, 0.75, 0.68, 0.85)])["cut_x"][0] == 0
    near = [(0.1, 0.1, 0.4, 0.2), (0.2, 0.5, 0.41, 0.6)]  # 0.01 apart: over SEAM_TOL
    assert _one(near + [(0.6, 0.6, 0.7, 0.7), (0.62, 0.1, 0.75, 0.2)])["cut_x"][0] == 0
    border = [(0.0, 0.1, 0.05, 0.2), (0.0, 0.5, 0.05, 0.6), (0.3, 0.3, 0.4, 0.4)]
    assert _one(border + [(0.6, 0.6, 0.7, 0.7)])["cut_x"][0] == 0  # x = 0.05 is the frame


def _quadrants(per):
    """``per`` boxes in each quadrant of the cross at (0.45, 0.55), none touching it."""
    out = []
    for qx, qy in ((0.0, 0.0), (0.45, 0.0), (0.0, 0.55), (0.45, 0.55)):
        for k in range(per):
            x, y = qx + 0.05 + 0.12 * k, qy + 0.05 + 0.1 * k
            out.append((x, y, x + 0.1, y + 0.08))
    return out


@pytest.mark.parametrize("per", [1, 2, 3])
def test_cross_min_is_the_fewest_boxes_in_a_quadrant_of_a_free_cross(per):
    assert _one(_quadrants(per))["cross_min"][0] == per


def test_cross_min_finds_another_free_cross_or_none():
    # boxes across x = 0.45 and y = 0.55 move the cross to x = 0.27, y = 0.3, which still
    # leaves two boxes in every quadrant (the answer worked out by hand)
    boxes = _quadrants(2) + [(0.3, 0.2, 0.6, 0.3), (0.1, 0.4, 0.2, 0.7)]
    assert _one(boxes)["cross_min"][0] == 2
    # one big box over the middle leaves no free line inside the central band
    assert _one(_quadrants(2) + [(0.12, 0.12, 0.88, 0.88)])["cross_min"][0] == 0


def _whole_photo_scenes(n):
    """Scenes of one box covering the whole photo: each mosaic box is then its tile."""
    z, o = np.zeros(n), np.ones(n)
    return Layouts(np.arange(n + 1), z, z.copy(), o, o.copy(), np.full(n, "natural"))


def test_four_tiles_meet_at_a_centre_in_the_middle_half_and_are_cut_at_the_canvas():
    lay = ultralytics_mosaics(300, 5, _whole_photo_scenes(10), np.ones(10), nine=0.0)
    assert np.all(np.diff(lay.offsets) == 4)
    b = np.column_stack([lay.x0, lay.y0, lay.x1, lay.y1]).reshape(-1, 4, 4)
    # tiles 0 and 2 end where tiles 1 and 3 start: the centre, in [0.25, 0.75]
    xc, yc = b[:, 0, 2], b[:, 0, 3]
    # float32 corners of tiles that share an edge, computed by the same formula: np.allclose's
    # rtol 1e-5 is rounding only (the same for the widths below)
    assert np.allclose(b[:, 1, 0], xc) and np.allclose(b[:, 2, 1], yc)
    assert np.all((xc >= 0.25) & (xc <= 0.75) & (yc >= 0.25) & (yc <= 0.75))
    # a photo is half the canvas wide (long side s on 2s): tiles are cut or leave padding
    assert np.allclose(b[:, 0, 2] - b[:, 0, 0], np.minimum(xc, 0.5))
    assert np.allclose(b[:, 1, 2] - b[:, 1, 0], np.minimum(1 - xc, 0.5))
    s = grid_scores_from_arrays(*lay.arrays())
    assert np.all(s["cross_min"] == 1) and np.all(s["cut_x"] >= 2) and np.all(s["cut_y"] >= 2)


def test_generator_is_deterministic_valid_and_keeps_slivers():
    scenes, asp = synthetic_natural(200, 1), photo_aspects(200, 2)
    a = ultralytics_mosaics(200, 3, scenes, asp)
    b = ultralytics_mosaics(200, 3, scenes, asp)
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("offsets", "x0", "y1"))
    assert set(a.kind.tolist()) == {MOSAIC_AUG}
    assert np.all((a.x0 >= 0) & (a.x1 <= 1) & (a.x1 > a.x0) & (a.y1 > a.y0))
    # boxes cut at the canvas edge stay, however thin (only zero area is dropped)
    assert (np.minimum(a.x1 - a.x0, a.y1 - a.y0) < 0.01).any()
    aff = ultralytics_mosaics(200, 3, scenes, asp, affine=True)
    assert np.all((aff.x0 >= 0) & (aff.x1 <= 1) & (aff.x1 > aff.x0))
