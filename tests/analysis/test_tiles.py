"""Tiles found from boxes alone (analysis.tiles), on composites whose photos are known."""

import numpy as np
import pytest

from analysis.augment_mosaic import ultralytics_mosaics
from analysis.calibration import Layouts, lattice, synthetic_natural
from analysis.tiles import split_boxes, tile_windows


def _photos(n, seed):
    """``n`` natural layouts of 3-8 boxes, as (k, 4) arrays."""
    lay = synthetic_natural(200, seed)
    out = []
    for k in range(lay.n_images):
        a, b = lay.offsets[k], lay.offsets[k + 1]
        if 3 <= b - a <= 8:
            out.append(np.column_stack([lay.x0[a:b], lay.y0[a:b], lay.x1[a:b], lay.y1[a:b]]))
        if len(out) == n:
            return out
    raise AssertionError("not enough photos")


def _collage(photos, k):
    """Equal-tile k x k collage: photo t's boxes scaled into tile t (row-major)."""
    return np.concatenate(
        [p / k + np.array([t % k, t // k, t % k, t // k]) / k for t, p in enumerate(photos)]
    )


@pytest.mark.parametrize("k", [2, 3])
def test_a_split_tile_holds_exactly_its_photos_boxes(k):
    photos = _photos(k * k, seed=k)
    tiles = split_boxes(_collage(photos, k), min_area=0.0)
    assert tiles is not None and len(tiles) == k * k
    for t, photo in zip(tiles, photos):
        # float64 window corners k/3 and the like: pytest.approx's rtol 1e-6 is rounding only
        assert t.window == pytest.approx(((t_ := tiles.index(t)) % k / k, t_ // k / k,
                                          (t_ % k + 1) / k, (t_ // k + 1) / k))  # fmt: skip
        # same boxes, in the photo's own coordinates; float64 maths on values that are
        # exact in binary except the /3 scaling, so 1e-12 is far below any pixel
        assert np.allclose(np.sort(t.boxes, 0), np.sort(photo, 0), atol=1e-12)
        assert t.dropped.size == 0


def test_the_minimum_area_rule_drops_boxes_too_small_in_their_tile():
    photos = _photos(4, seed=5)
    photos[0] = np.vstack([photos[0], [0.5, 0.5, 0.55, 0.55]])  # 0.0025 of its photo
    tiles = split_boxes(_collage(photos, 2), min_area=0.01)
    p = photos[0]
    small = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1]) < 0.01  # measured in the tile
    assert small[-1] and tiles[0].dropped.tolist() == np.flatnonzero(small).tolist()
    assert len(tiles[0].boxes) == (~small).sum()


def test_a_mosaic_is_cut_at_its_centre_when_photos_touch_it():
    # whole-photo boxes: every tile's box touches the centre from its side
    n = 50
    z, o = np.zeros(n), np.ones(n)
    scenes = Layouts(np.arange(n + 1), z, z.copy(), o, o.copy(), np.full(n, "natural"))
    lay = ultralytics_mosaics(40, 3, scenes, np.ones(n), nine=0.0)
    for m in range(lay.n_images):
        a = lay.offsets[m]
        b = np.column_stack(
            [lay.x0[a : a + 4], lay.y0[a : a + 4], lay.x1[a : a + 4], lay.y1[a : a + 4]]
        )
        xc, yc = b[0, 2], b[0, 3]
        windows = tile_windows(b)
        assert windows is not None
        # float32 layout corners (ulp ~6e-8 in [0, 1]) read back as float64: 1e-6 of the image
        assert windows[0][2] == pytest.approx(xc, abs=1e-6)
        assert windows[0][3] == pytest.approx(yc, abs=1e-6)


def test_no_tiles_without_a_free_cross():
    # one box across the middle of a scene: no line splits it
    assert tile_windows(np.array([[0.1, 0.1, 0.9, 0.9], [0.2, 0.2, 0.3, 0.3]])) is None
    assert split_boxes(np.zeros((0, 4)), 0.01) is None


def test_every_box_lands_in_exactly_one_tile():
    lay = lattice(30, 9)
    for m in range(lay.n_images):
        a, b = lay.offsets[m], lay.offsets[m + 1]
        boxes = np.column_stack([lay.x0[a:b], lay.y0[a:b], lay.x1[a:b], lay.y1[a:b]])
        tiles = split_boxes(boxes, 0.01)
        if tiles is None:
            continue
        held = np.concatenate([np.r_[t.index, t.dropped] for t in tiles])
        assert np.array_equal(np.sort(held), np.arange(b - a))
