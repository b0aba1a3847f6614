"""The family that explains an image: lattices and rows are never called tiles, so that
--remediate split never cuts a lattice into pieces (#12 item 5)."""

import numpy as np

from analysis.audit import family_of
from analysis.calibration import calibration_split
from analysis.layout_stats import grid_scores_from_arrays


def test_structured_layouts_are_explained_as_lattice_or_rows_and_mosaics_as_tiles():
    lay = calibration_split("B", None, n_per_kind=200, n_synthetic=100)
    cols = grid_scores_from_arrays(*lay.arrays())
    families, code = family_of(cols, 0.6)
    fam = np.asarray(families)[code]
    flagged = (cols["grid_score"] >= 0.6) & ~cols["low_evidence"]
    for kind in ("lattice", "rows"):
        got = set(fam[flagged & (lay.kind == kind)].tolist())
        assert got <= {"lattice", "rows"}, (kind, got)
    for kind in ("mosaic", "mosaic_aug"):
        got = fam[flagged & (lay.kind == kind)]
        # a tile may itself hold a shelf (rows): that mosaic is filtered, not split
        assert np.isin(got, ["mosaic", "mosaic_aug"]).mean() >= 0.95, (kind, set(got.tolist()))


def test_the_family_is_the_first_highest_score_with_ties_nans_and_the_structured_rule():
    """Against the rule written per image: the first family with the highest score
    (NaN never wins), lattice and rows only when either reaches the threshold; with a
    float64 pixel score beside the float32 box scores."""
    from analysis.audit import PIXELS, STRUCTURED
    from analysis.grid_score import FAMILIES

    rng = np.random.default_rng(0)
    n = 2_000
    cols = {
        f"{f}_score": rng.choice([0.1, 0.5, 0.6, 0.6, 0.9, np.nan], n).astype(np.float32)
        for f in FAMILIES
    }
    cols[f"{PIXELS}_score"] = rng.choice([0.0, 0.6, 0.95, np.nan], n)
    cols["grid_score"] = np.zeros(n, np.float32)  # the row count
    families, code = family_of(cols, 0.6)
    assert families == (*FAMILIES, PIXELS)
    for i in range(n):
        strong = any(cols[f"{f}_score"][i] >= 0.6 for f in STRUCTURED)
        best, want = -np.inf, 0
        for k, f in enumerate(families):
            s = float(cols[f"{f}_score"][i])
            if s > best and (f in STRUCTURED or not strong):
                best, want = s, k
        assert code[i] == want, (i, {f: cols[f"{f}_score"][i] for f in families})
