"""The report's cost does not grow with the dataset, and its fast paths give the old answers.

``render_report`` draws from binned counts and at most ``AUDIT_WORST`` layouts; the
binned counts and the top-K selection must equal what the old code computed from every
image (``np.histogram2d`` per source, ``groupby`` + ``hist``, a full stable ``argsort``).
"""

import numpy as np
import pyarrow as pa
import pytest

from analysis import report
from analysis.audit import gate, top_k
from analysis.calibration import concat, lattice, synthetic_natural, to_records
from analysis.layout_kernels import centre_bin_keys
from analysis.layout_stats import layout_stats
from pipeline.core import defaults
from pipeline.core.records import flatten_boxes


def _data(n_natural: int, n_grid: int, seed: int):
    lay = concat([synthetic_natural(n_natural, seed), lattice(n_grid, seed + 1)])
    records = to_records(lay, "src")
    df = layout_stats(records)
    ref = {"name": "ref", "scores": np.array([0.01, 0.02, 0.9])}
    return records, df, ref, gate(df, ref)


def _counting(log, fn, measure):
    def wrapped(*args):
        out = fn(*args)
        log.append(measure(out))
        return out

    return wrapped


def test_the_report_draws_the_same_bounded_sample_at_n_and_4n_images(monkeypatch):
    drawn, heat_shapes = [], []
    monkeypatch.setattr(
        report.ReportSample,
        "worst_entries",
        _counting(drawn, report.ReportSample.worst_entries, len),
    )
    monkeypatch.setattr(
        report, "source_heatmaps", _counting(heat_shapes, report.source_heatmaps, np.shape)
    )
    for n in (100, 400):
        records, df, ref, result = _data(n, n // 4, 3)
        assert (~df.low_evidence & (df.grid_score >= 0.6)).sum() > defaults.AUDIT_WORST
        report.render_report(df, result, ref, records)
    assert drawn == [defaults.AUDIT_WORST] * 2
    assert heat_shapes == [(1, report.HEATMAP_BINS, report.HEATMAP_BINS)] * 2


def test_binned_counts_equal_the_per_image_figures():
    lay = concat([synthetic_natural(150, 7), lattice(40, 8)])
    other = to_records(synthetic_natural(80, 9), "b", start=10_000)
    records = pa.concat_tables([to_records(lay, "a"), other])
    df = layout_stats(records)
    # heatmaps: the old np.histogram2d of box centres, per source
    heats = report.source_heatmaps(records, ["a", "b"])
    fb = flatten_boxes(records)
    x0, y0, x1, y1 = fb.coords()  # float64, as the old report took them
    src = np.asarray(records.column("source").to_pylist())[fb.image]
    for k, s in enumerate(["a", "b"]):
        m = src == s
        old = report.centre_heatmap((x0[m] + x1[m]) / 2, (y0[m] + y1[m]) / 2)
        np.testing.assert_array_equal(heats[k], old)
    # score histograms: the old groupby of judged images, then np.histogram per source
    bins = np.linspace(0, 1, 41)
    got = report.score_histograms(df, bins)
    judged = df[~df.low_evidence]
    assert list(got) == sorted(judged.source.unique())
    for s, part in judged.groupby("source"):
        np.testing.assert_array_equal(got[s], np.histogram(part.grid_score, bins=bins)[0])


@pytest.mark.parametrize("bins", [report.HEATMAP_BINS, 4000])  # 4000: float32 error grows
def test_box_centres_on_and_beside_bin_edges_fall_where_histogram2d_puts_them(bins):
    """The bins are estimated from the float64 centre and settled against the edges:
    centres a few float32 steps either side of every edge (and on it) must match."""
    rng = np.random.default_rng(3)
    edge = (rng.integers(0, bins + 1, 20_000) / bins).astype(np.float32)
    lo = np.clip(edge - rng.uniform(0, 0.2, edge.size), 0, 1).astype(np.float32)
    hi = np.clip(2 * edge - lo, 0, 1).astype(np.float32)
    for steps in rng.integers(-3, 4, (3, edge.size)):  # move hi by up to 3 float32 steps
        h = hi.copy()
        for k in range(3):
            h = np.where(steps > k, np.nextafter(h, np.float32(2)), h)
            h = np.where(steps < -k, np.nextafter(h, np.float32(-1)), h)
        h = np.clip(h, 0, 1).astype(np.float32)
        flip = np.arange(lo.size)[::-1]  # y: the same centres in another order
        key = centre_bin_keys(lo, lo[flip], h, h[flip], np.linspace(0, 1, bins + 1))
        centre = (lo.astype(float) + h.astype(float)) / 2
        want = np.searchsorted(np.linspace(0, 1, bins + 1), centre, "right") - 1
        np.testing.assert_array_equal(key % bins, np.clip(want, 0, bins - 1))
        np.testing.assert_array_equal(key // bins, np.clip(want, 0, bins - 1)[flip])
        heat = report.centre_heatmap(centre, centre, bins)
        assert np.trace(heat) == edge.size and heat[np.diag_indices(bins)].tolist() == [
            int((np.clip(want, 0, bins - 1) == b).sum()) for b in range(bins)
        ]


@pytest.mark.parametrize("k", [0, 1, 5, 24, 200])
def test_top_k_equals_the_full_stable_sort_with_ties_and_nans(k):
    rng = np.random.default_rng(k)
    scores = rng.choice([0.0, 0.3, 0.7, 0.7, 0.9, np.nan], size=100)
    expect = np.argsort(-scores, kind="stable")[:k]
    np.testing.assert_array_equal(top_k(scores, k), expect)
    few = np.array([np.nan, 0.5, np.nan])
    np.testing.assert_array_equal(top_k(few, 2), np.argsort(-few, kind="stable")[:2])


@pytest.mark.parametrize("n_sources", [1, 3, report.MANY_SOURCES + 6])
def test_each_sources_top_rows_equal_one_sort_by_source_score_and_row(n_sources):
    """Per source, the rows a sort by (source, -score, row) puts first: ties to the
    earlier row, NaN last, below and above ``MANY_SOURCES`` (its two paths)."""
    rng = np.random.default_rng(n_sources)
    n = 3_000
    scores = rng.choice([0.0, 0.3, 0.7, 0.7, 0.9, np.nan], size=n).astype(np.float32)
    names = np.array([f"s{k:03d}" for k in range(n_sources)])
    sources = pa.array(names[rng.integers(0, n_sources, n)])
    code = np.searchsorted(names, np.asarray(sources.to_pylist()))
    ranked = np.lexsort((np.arange(n), -np.nan_to_num(scores.astype(float), nan=-np.inf), code))
    expect = np.concatenate(
        [ranked[code[ranked] == c][: report.PER_SOURCE] for c in range(n_sources)]
    )
    got = report._top_per_source(scores, sources, report.PER_SOURCE)
    np.testing.assert_array_equal(np.sort(got), np.sort(expect))
    assert len(got) == len(set(got.tolist()))
