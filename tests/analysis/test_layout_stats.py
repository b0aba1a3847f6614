"""Each layout statistic on hand-made layouts whose answer is known."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from analysis.calibration import Layouts, concat, lattice, mosaics, synthetic_natural, to_records
from analysis.layout_stats import _blocks, _tasks, grid_scores_from_arrays, layout_stats
from analysis.segments import seg_median, seg_reduce


def _one(boxes):
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return grid_scores_from_arrays(np.array([0, len(b)]), b[:, 0], b[:, 1], b[:, 2], b[:, 3])


def _lattice_boxes(r, c, size=0.1, x0=0.1, y0=0.1, step=0.2):
    return [
        (x0 + j * step, y0 + i * step, x0 + j * step + size, y0 + i * step + size)
        for i in range(r)
        for j in range(c)
    ]


def test_perfect_lattice_is_regular_periodic_aligned_and_grid_like():
    s = _one(_lattice_boxes(4, 4))
    assert s["nn_cv"][0] == pytest.approx(0.0, abs=1e-3)  # centres quantised to 1/16384
    assert s["periodicity_x"][0] > 0.95 and s["periodicity_y"][0] > 0.95
    # equal box sizes: 1 up to float32 rounding, within pytest.approx's rtol 1e-6
    assert s["size_homogeneity"][0] == pytest.approx(1.0)
    assert s["row_align"][0] == 1.0 and s["col_align"][0] == 1.0
    assert s["clark_evans"][0] > 1.0  # regular: NN distance above the Poisson expectation
    assert s["grid_score"][0] > 0.9 and not s["low_evidence"][0]


def test_clustered_random_points_are_not_regular():
    rng = np.random.default_rng(0)
    c = rng.normal(0.5, 0.08, (20, 2))
    sz = np.exp(rng.uniform(-4, -1.5, 20))
    s = _one(np.column_stack([c - sz[:, None] / 2, c + sz[:, None] / 2]))
    assert s["clark_evans"][0] < 1.0
    assert s["nn_cv"][0] > 0.3
    assert s["grid_score"][0] < 0.5


def test_clark_evans_and_nn_match_a_per_image_kdtree():
    lay = synthetic_natural(60, seed=3)
    s = grid_scores_from_arrays(*lay.arrays())
    for k in range(lay.n_images):
        a, b = lay.offsets[k], lay.offsets[k + 1]
        n = b - a
        if n < 2:
            assert not np.isfinite(s["clark_evans"][k]) or n == 1
            continue
        pts = np.column_stack([(lay.x0[a:b] + lay.x1[a:b]) / 2, (lay.y0[a:b] + lay.y1[a:b]) / 2])
        d, _ = cKDTree(pts).query(pts, k=2)
        nn = d[:, 1]
        expected = 0.5 / np.sqrt(n) + (0.0514 + 0.041 / np.sqrt(n)) * 4 / n
        # centres are quantised to 1/16384 of the image for the pairwise maths
        assert s["clark_evans"][k] * expected == pytest.approx(nn.mean(), abs=1e-4)
        if nn.mean() > 0.01:
            assert s["nn_cv"][k] == pytest.approx(nn.std() / nn.mean(), abs=1e-2)


def test_seam_counts_edges_on_an_uncrossed_line_and_a_crossing_box_breaks_it():
    # four quadrant groups whose boxes touch x = 0.5 and y = 0.5 from both sides
    boxes = [
        (0.2, 0.1, 0.5, 0.3),
        (0.5, 0.1, 0.8, 0.4),
        (0.1, 0.6, 0.5, 0.9),
        (0.5, 0.7, 0.9, 0.8),
        (0.05, 0.05, 0.15, 0.2),
    ]
    s = _one(boxes)
    assert s["seam_x"][0] == 4
    assert s["cross_cells"][0] == 4
    crossed = _one(boxes + [(0.4, 0.42, 0.6, 0.48)])  # straddles x = 0.5
    assert crossed["seam_x"][0] < 4


def test_shared_baselines_versus_scattered_bottoms():
    row = [
        (x, 0.5 - h, x + 0.08, 0.5)
        for x, h in zip(np.arange(0.05, 0.9, 0.11), [0.2, 0.22, 0.19, 0.21, 0.2, 0.2, 0.23, 0.2])
    ]
    assert _one(row)["baseline_align"][0] == 1.0
    rng = np.random.default_rng(1)
    bottoms = 0.3 + rng.permutation(8) * 0.08
    scattered = [(x, b - 0.2, x + 0.08, b) for (x, _, _, _), b in zip(row, bottoms)]
    assert _one(scattered)["baseline_align"][0] == 0.0


def test_size_homogeneity_falls_with_size_spread():
    same = _one(_lattice_boxes(2, 3))
    mixed = _one(
        [
            (0.1, 0.1, 0.12, 0.12),
            (0.3, 0.3, 0.7, 0.9),
            (0.8, 0.1, 0.85, 0.3),
            (0.0, 0.6, 0.2, 0.65),
            (0.75, 0.75, 0.95, 0.95),
            (0.2, 0.2, 0.25, 0.26),
        ]
    )
    # equal sizes: 1 up to float32 rounding (pytest.approx rtol 1e-6)
    assert same["size_homogeneity"][0] == pytest.approx(1.0)
    assert mixed["size_homogeneity"][0] < 0.5


def test_low_evidence_images_score_zero_and_empty_images_are_safe():
    off = np.array([0, 0, 1, 3, 6, 10])
    b = np.array(_lattice_boxes(2, 5))
    s = grid_scores_from_arrays(off, b[:, 0], b[:, 1], b[:, 2], b[:, 3])
    assert s["n_boxes"].tolist() == [0, 1, 2, 3, 4]
    assert s["low_evidence"].tolist() == [True, True, True, True, False]
    assert (s["grid_score"][:4] == 0).all()
    assert np.isfinite(s["grid_score"]).all()


def test_chunking_does_not_change_results():
    lay = synthetic_natural(200, seed=5)
    big = grid_scores_from_arrays(*lay.arrays())
    small = grid_scores_from_arrays(*lay.arrays(), max_pairs=50)
    for k, v in big.items():
        np.testing.assert_allclose(
            # float32 pairwise statistics summed over blocks of another size: reduction order only
            # (~1e-7 relative); a wrong block boundary changes scores by far more
            np.asarray(small[k], float),
            np.asarray(v, float),
            rtol=1e-5,
            equal_nan=True,
        )


@pytest.mark.parametrize("small_pairs", [0, 2_000, 10**9])
def test_threads_and_task_grouping_give_the_same_bits(small_pairs):
    """Blocks keep their images whichever thread runs them and in whatever order, so
    results are bit-identical to one thread's (no tolerance: the same float32 operations
    on the same arrays); a block lost, repeated or scattered to the wrong rows is not."""
    lay = concat(
        [synthetic_natural(300, 7), lattice(40, 8), mosaics(40, 9, synthetic_natural(50, 10))]
    )
    one = grid_scores_from_arrays(*lay.arrays(), max_pairs=3_000)
    two = grid_scores_from_arrays(
        *lay.arrays(), max_pairs=3_000, workers=2, small_pairs=small_pairs
    )
    assert one.keys() == two.keys()
    for k, v in one.items():
        np.testing.assert_array_equal(two[k], v, err_msg=k)


def test_tasks_hold_every_block_once_small_ones_together_first():
    counts = np.random.default_rng(0).integers(0, 31, 5_000)
    blocks = list(_blocks(counts, 20_000))
    tasks = _tasks(blocks, 5_000)
    flat = [b for t in tasks for b in t]
    assert sorted(map(id, flat)) == sorted(map(id, blocks))
    pairs = [[n * n * idx.size for n, idx in t] for t in tasks]
    assert max(pairs[0]) < 5_000 and all(len(p) == 1 and p[0] >= 5_000 for p in pairs[1:])
    assert [p[0] for p in pairs[1:]] == sorted((p[0] for p in pairs[1:]), reverse=True)


def test_segment_helpers_handle_empty_segments():
    v = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    off = np.array([0, 3, 3, 5])
    assert seg_reduce(np.add, v, off).tolist() == [6.0, 0.0, 9.0]
    med = seg_median(v, off)
    assert med[0] == 2.0 and np.isnan(med[1]) and med[2] == 4.5


def test_layout_stats_on_records_keeps_ids_and_handles_slices():
    lay = concat(
        [
            synthetic_natural(5, seed=1),
            Layouts(np.array([0, 16]), *np.array(_lattice_boxes(4, 4)).T, np.array(["lattice"])),
        ]
    )
    records = to_records(lay, "src")
    df = layout_stats(records)
    assert df["image_id"].tolist() == [f"src:{k}" for k in range(6)]
    assert df["n_boxes"].iloc[-1] == 16 and df["grid_score"].iloc[-1] > 0.9
    part = layout_stats(records.slice(3, 3))
    # float32 scores of the same images computed in another batch: default rtol 1e-7 holds since
    # images with one box count share a block either way
    np.testing.assert_allclose(part["grid_score"], df["grid_score"].iloc[3:])
    assert layout_stats(records.slice(0, 0)).empty
