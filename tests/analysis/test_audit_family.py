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
