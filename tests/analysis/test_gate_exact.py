"""The gate's memory-lean arithmetic gives exactly what the plain arithmetic gives:
the tests' sums and maxima taken a slice at a time, the ties merged from each sample's
runs, and ``>= threshold`` on float32 scores without a float64 copy."""

import numpy as np
import pytest

from analysis import stat_tests
from analysis.audit import at_least, top_k
from analysis.stat_tests import ks_2samp, mann_whitney_greater


def _samples(seed: int):
    rng = np.random.default_rng(seed)
    x = np.round(rng.beta(2, 5, 5_000), 3)  # many ties, within and across the samples
    y = np.round(rng.beta(2, 4, 300), 3)
    return x, y


@pytest.mark.parametrize("seed", [0, 1])
def test_tests_by_slices_equal_the_whole(monkeypatch, seed):
    x, y = _samples(seed)
    whole = ks_2samp(x, y), mann_whitney_greater(x, y)
    monkeypatch.setattr(stat_tests, "CHUNK", 7)
    assert (ks_2samp(x, y), mann_whitney_greater(x, y)) == whole
    assert ks_2samp(x[::-1], y) == whole[0]  # the order of a sample does not matter


def test_tie_counts_merged_from_runs():
    x, y = _samples(2)
    a, b = np.sort(x), np.sort(y)
    _, want = np.unique(np.concatenate([a, b]), return_counts=True)
    np.testing.assert_array_equal(stat_tests._tie_counts(a, b), want)
    assert stat_tests._tie_counts(a[:0], b).tolist() == np.unique(b, return_counts=True)[1].tolist()


@pytest.mark.parametrize(
    "threshold", [0.6, 0.7, 0.55, 0.1, 1 / 3, 0.0, 1.0]
)  # 0.7: its float32 is below it
def test_at_least_equals_float64_comparison(threshold):
    rng = np.random.default_rng(3)
    near = np.float32(threshold)
    values = np.concatenate(
        [
            rng.random(1000, dtype=np.float32),
            [np.nextafter(near, np.float32(-1)), near, np.nextafter(near, np.float32(2))],
            [np.nan],
        ]
    ).astype(np.float32)
    want = values.astype(np.float64) >= threshold
    np.testing.assert_array_equal(at_least(values, threshold), want)
    np.testing.assert_array_equal(at_least(values.astype(np.float64), threshold), want)


def test_top_k_same_in_float32_and_float64():
    rng = np.random.default_rng(4)
    s = np.round(rng.random(10_000), 2).astype(np.float32)  # ties: index order decides
    s[::97] = np.nan
    np.testing.assert_array_equal(top_k(s, 50), top_k(s.astype(np.float64), 50))
    np.testing.assert_array_equal(top_k(s, 50), np.argsort(-s.astype(float), kind="stable")[:50])
