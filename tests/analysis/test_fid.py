"""FID's Fréchet distance against its closed form, and the no-weights rule."""

import numpy as np
import pytest

from analysis.fid import frechet_distance, load_inception
from pipeline.core.errors import UserError


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    n, d = 200_000, 3
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([2.0, 1.0, 0.5])
    mu1, mu2 = np.zeros(d), np.array([1.0, 0.0, -2.0])
    a = mu1 + rng.normal(size=(n, d)) * s1
    b = mu2 + rng.normal(size=(n, d)) * s2
    # ||mu1-mu2||^2 + sum (s1 - s2)^2 for diagonal covariances (standard deviations s).
    expected = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    # sampling error, not rounding: 200,000 draws estimate each mean and std to ~0.2-0.5%, and
    # the distance sums their squares; 2% is a few standard errors. Identical inputs give 0 up
    # to float64 rounding of the matrix square root (~1e-12), hence 1e-6 below
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_missing_inception_weights_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="never downloads"):
        load_inception(tmp_path / "inception.pth")
