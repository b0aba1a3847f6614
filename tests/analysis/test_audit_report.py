"""The HTML report renders, is self-contained, and its spectrum shows lattices."""

import base64
import io
import re

import numpy as np
from PIL import Image

from analysis.audit import gate
from analysis.calibration import concat, lattice, synthetic_natural, to_records
from analysis.layout_stats import layout_stats
from analysis.report import centre_heatmap, power_spectrum, render_report


def _render(layouts, reference_scores):
    records = to_records(layouts, "src")
    df = layout_stats(records)
    ref = {"name": "ref", "scores": reference_scores}
    result = gate(df, ref)
    return render_report(df, result, ref, records), result


def test_report_is_self_contained_and_states_the_verdict():
    ref = layout_stats(to_records(synthetic_natural(200, 2), "r"))
    ref_scores = ref.loc[~ref.low_evidence, "grid_score"].to_numpy()
    page, result = _render(concat([synthetic_natural(150, 1), lattice(30, 3)]), ref_scores)
    assert result["verdict"] == "fail"
    assert "FAIL" in page and "grid-like" in page
    # offline: no external resources at all, every image is an inline PNG that decodes
    assert not re.search(r"""(src|href)=["'](https?:|//|/)""", page)
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(pngs) == 4  # histogram, heatmaps, worst images, the source's own
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    # figures are encoded on a thread and put in afterwards: each in its own place
    assert "\0" not in page
    sizes = [Image.open(io.BytesIO(base64.b64decode(p))).size for p in pngs]
    assert [w for w, _ in sizes] == [940, 660, 818, 818]  # histogram, heatmaps, galleries
    assert sizes[2][1] > sizes[3][1]  # 24 worst images above the source's own 4


def test_report_renders_for_a_clean_dataset_without_grid_images():
    page, result = _render(synthetic_natural(60, 5), np.array([0.01, 0.02, 0.03]))
    assert "No grid-like images" in page or result["worst_images"]
    assert "<h1>" in page


def test_power_spectrum_peaks_off_centre_for_a_lattice_not_for_natural():
    def peak_ratio(lay):
        cx, cy = (lay.x0 + lay.x1) / 2, (lay.y0 + lay.y1) / 2
        p = np.expm1(power_spectrum(centre_heatmap(cx, cy, bins=64)))
        c = p.shape[0] // 2
        p[c - 2 : c + 3, c - 2 : c + 3] = 0  # ignore the low-frequency blob
        return p.max() / np.median(p)

    # lattices of one spacing: centres pile up on a period, the spectrum has peaks
    grid = lattice(60, 9)
    step = 1 / 8
    snap = lambda v: (np.floor(v / step) + 0.5) * step
    cx, cy = snap((grid.x0 + grid.x1) / 2), snap((grid.y0 + grid.y1) / 2)
    grid.x0, grid.x1, grid.y0, grid.y1 = cx - 0.02, cx + 0.02, cy - 0.02, cy + 0.02
    assert peak_ratio(grid) > 3 * peak_ratio(synthetic_natural(60, 9))
