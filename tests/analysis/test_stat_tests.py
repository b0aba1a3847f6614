"""The gate's small tests (``analysis.stat_tests``) against scipy.stats, where installed.

Tolerances, by operation:
- binomial tail: the continued fraction converges to 1e-15, but its prefactor is
  exp(lgamma(n + 1) - ...), and lgamma of 2e7 is 3e8, so its float64 rounding (1e-16
  relative) moves the exponent by ~3e-8 absolute: rtol 1e-6 covers n up to 2e7 with
  margin (1e-12 at the n of a real audit source, measured);
- Mann-Whitney: the same float64 formula as scipy's asymptotic method, summed in
  another order: rtol 1e-9;
- KS: D is exact (equal); the p-value is Kolmogorov's limit with Stephens' correction,
  scipy's is the finite-n distribution: within 5% relative for samples of a few
  hundred and more (measured 0.3% at 160,000 x 1,100), which is all the report shows.
"""

import numpy as np
import pytest

from analysis.stat_tests import binom_sf, kolmogorov_sf, ks_2samp, mann_whitney_greater

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize(
    "k,n,p",
    [
        (15, 15, 0.045),
        (0, 10, 0.3),
        (1, 1, 0.5),
        (3, 100, 0.05),
        (50, 1000, 0.045),
        (7300, 159_591, 0.045),
        (8000, 159_591, 0.045),
        (2, 3, 1e-6),
        (10, 20, 1 - 1e-6),
        (4_000_000, 20_000_000, 0.2),
        (5_000_000, 20_000_000, 0.249),
    ],
)
def test_binomial_tail_equals_scipy(k, n, p):
    want = stats.binomtest(k, n, p, alternative="greater").pvalue
    assert binom_sf(k, n, p) == pytest.approx(want, rel=1e-6, abs=1e-300)


def test_binomial_tail_known_values():
    # all of 15: p^15 (rtol 1e-13: lgamma and exp round the prefactor to a few ulps)
    assert binom_sf(15, 15, 0.5) == pytest.approx(0.5**15, rel=1e-13)
    assert binom_sf(0, 5, 0.3) == 1.0 and binom_sf(6, 5, 0.3) == 0.0
    assert binom_sf(1, 4, 0.25) == pytest.approx(1 - 0.75**4, rel=1e-14)


@pytest.mark.parametrize("n1,n2,digits", [(160_000, 1100, 3), (50, 1100, 3), (9, 12, None)])
def test_mann_whitney_equals_scipy_asymptotic(n1, n2, digits):
    rng = np.random.default_rng(n1)
    x, y = rng.random(n1), rng.random(n2) * 0.98
    if digits:  # ties: the tie correction is exercised
        x, y = np.round(x, digits), np.round(y, digits)
    u, p = mann_whitney_greater(x, y)
    want = stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic")
    assert u == want.statistic
    assert p == pytest.approx(want.pvalue, rel=1e-9)


@pytest.mark.parametrize("n1,n2", [(160_000, 1100), (20_000, 1100), (300, 400)])
def test_ks_statistic_exact_and_pvalue_near_scipy(n1, n2):
    rng = np.random.default_rng(n2)
    x, y = np.round(rng.random(n1), 3), np.round(rng.random(n2) ** 1.05, 3)
    d, p = ks_2samp(x, y)
    want = stats.ks_2samp(x, y)
    assert d == pytest.approx(want.statistic, abs=1e-12)
    assert p == pytest.approx(want.pvalue, rel=0.05)


def test_kolmogorov_limit_known_values():
    # P(K > x) of Kolmogorov's distribution: scipy.special.kolmogorov
    special = pytest.importorskip("scipy.special")
    for x in (0.2, 0.5, 1.0, 1.36, 2.0, 3.0):
        assert kolmogorov_sf(x) == pytest.approx(special.kolmogorov(x), rel=1e-9, abs=1e-10)
