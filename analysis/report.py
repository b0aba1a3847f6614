"""A self-contained HTML audit report (inline base64 PNGs; opens offline, no assets).

It shows what a reviewer needs to trust or overrule the gate: the verdict in plain
words, grid shares per source, where box centres fall per source and the 2D power
spectrum of that heatmap (a lattice shows as off-centre peaks), the grid-score histogram
against the natural reference, and the worst images drawn as box layouts.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from analysis.audit import Columns, column, labels, top_k
from analysis.layout_kernels import centre_bin_keys
from analysis.report_gallery import figures_encoded_aside, font
from analysis.report_gallery import png as _png
from analysis.report_gallery import source_galleries as _source_galleries
from analysis.report_gallery import worst_gallery as _worst_gallery
from pipeline.core import arrow_kernels as kernels
from pipeline.core import defaults
from pipeline.core.records import flatten_boxes

HEATMAP_BINS = 48
MAX_SOURCES = 12
PER_SOURCE = 4  # each source's own worst examples in the report
MANY_SOURCES = 64  # above this, each source's top rows come from one sort


# Colour anchors sampled from matplotlib's magma / viridis / tab10 (interpolated here):
# the report is drawn with Pillow, because importing matplotlib and laying out its
# figures took about 1 s of a 3.5 s audit of 250,000 images.
MAGMA = [(0, 0, 4), (29, 17, 71), (81, 18, 124), (131, 38, 129), (183, 55, 121),
         (231, 82, 99), (252, 137, 97), (254, 196, 136), (252, 253, 191)]  # fmt: skip
VIRIDIS = [(68, 1, 84), (71, 45, 123), (59, 82, 139), (44, 114, 142), (33, 145, 140),
           (40, 174, 128), (94, 201, 98), (173, 220, 48), (253, 231, 37)]  # fmt: skip
TAB10 = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
         (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # fmt: skip
BLUE, GREY, RED, INK = TAB10[0], (150, 150, 150), (214, 39, 40), (30, 30, 30)


def _canvas(width: int, height: int):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    return img, ImageDraw.Draw(img)


def _coloured(values: np.ndarray, anchors: list, size: int):
    """``values`` min-max scaled through the colour anchors, scaled up without smoothing."""
    from PIL import Image

    v = np.asarray(values, float)
    span = v.max() - v.min() if v.size else 0.0
    t = (v - v.min()) / span if span > 0 else np.zeros_like(v)
    at = np.linspace(0, 1, len(anchors))
    rgb = np.stack([np.interp(t, at, [c[k] for c in anchors]) for k in range(3)], axis=-1)
    return Image.fromarray(rgb.round().astype(np.uint8)).resize((size, size), Image.NEAREST)


def centre_heatmap(cx: np.ndarray, cy: np.ndarray, bins: int = HEATMAP_BINS) -> np.ndarray:
    h, _, _ = np.histogram2d(cy, cx, bins=bins, range=[[0, 1], [0, 1]])
    return h


def power_spectrum(heat: np.ndarray) -> np.ndarray:
    """log power of the mean-removed heatmap, DC centred; periodic layouts give peaks."""
    f = np.fft.fftshift(np.fft.fft2(heat - heat.mean()))
    return np.log1p(np.abs(f) ** 2)


def source_heatmaps(records: pa.Table, sources: list[str], bins: int = HEATMAP_BINS):
    """Box-centre counts per source, ``(len(sources), bins, bins)``, rows = y.

    One ``bincount`` over every box, chunk by chunk and on the four coordinates only, so
    the figure drawn from it costs the same for 1,000 or 10,000,000 images.
    """
    heat = np.zeros(len(sources) * bins * bins, np.int64)
    want = {s: k for k, s in enumerate(sources)}
    edges = np.linspace(0, 1, bins + 1)
    for batch in records.select(["source", "boxes"]).to_batches():
        code, names = labels(batch.column(0))
        lut = np.array([want.get(n, -1) for n in names] + [-1], np.int64)
        lists = batch.column(1)
        lists = kernels.fill_null(lists, []) if lists.null_count else lists
        off = np.asarray(lists.offsets, np.int64)
        row_src = lut[code] if code.size else code
        flat = kernels.list_flatten(lists)
        x0, y0, x1, y1 = (
            flat.field(k).to_numpy(zero_copy_only=False) for k in ("x0", "y0", "x1", "y1")
        )
        key = centre_bin_keys(x0, y0, x1, y1, edges)  # the bin within a source's heatmap
        if row_src.size and (row_src == row_src[0]).all():  # one source: no owner per box
            if row_src[0] >= 0:
                heat[row_src[0] * bins * bins : (row_src[0] + 1) * bins * bins] += np.bincount(
                    key, minlength=bins * bins
                )
            continue
        owner_src = np.repeat(row_src, np.diff(off))
        keep = owner_src >= 0
        heat += np.bincount((owner_src * bins * bins + key)[keep], minlength=heat.size)
    return heat.reshape(len(sources), bins, bins)


def _source_figures(sample: ReportSample) -> str:
    # every source with records has its counts: no second pass over the source column
    sources = sorted(sample.heatmaps)[:MAX_SOURCES]
    if not sources:
        return "<p>No images.</p>"
    heats = [sample.heatmaps[s] for s in sources]
    size, pad, head = 300, 20, 28
    img, draw = _canvas(2 * size + 3 * pad, len(sources) * (size + head + pad) + pad)
    big = font(14)
    for k, (s, heat) in enumerate(zip(sources, heats)):
        y = pad + k * (size + head + pad)
        titles = (f"{s}: box centres ({int(heat.sum())} boxes)", "2D power spectrum (grids: peaks)")
        panels = (_coloured(heat, MAGMA, size), _coloured(power_spectrum(heat), VIRIDIS, size))
        for j, (title, panel) in enumerate(zip(titles, panels)):
            x = pad + j * (size + pad)
            draw.text((x, y), title, fill=INK, font=big)
            img.paste(panel, (x, y + head))
    return _png(img)


def score_histograms(df: Columns, bins: np.ndarray) -> dict[str, np.ndarray]:
    """Judged grid scores per source as counts on fixed bins (the figure's only input)."""
    judged = ~column(df, "low_evidence", bool)
    scores = column(df, "grid_score")[judged]
    code, names = labels(df["source"])
    code = code[judged]
    present = np.bincount(code, minlength=len(names)) > 0  # sources with judged images
    nb = bins.size - 1
    b = np.clip(np.searchsorted(bins, scores, side="right") - 1, 0, nb - 1)
    counts = np.bincount(code * nb + b, minlength=len(names) * nb).reshape(len(names), nb)
    return {str(n): counts[k] for k, n in enumerate(names) if present[k]}


def _histogram(df: Columns, ref_scores: np.ndarray, threshold: float) -> str:
    """Densities of judged scores per source (lines) and of the reference (grey bars) on
    40 fixed bins; y is log(1 + density), as matplotlib's symlog scale drew it."""
    bins = np.linspace(0, 1, 41)
    width = np.diff(bins)
    series = [
        (str(s), c / (c.sum() * width))
        for s, c in list(score_histograms(df, bins).items())[:MAX_SOURCES]
        if c.sum()
    ]
    ref = np.histogram(ref_scores, bins=bins)[0] if len(ref_scores) else np.zeros(40)
    ref = ref / (ref.sum() * width) if ref.sum() else None
    top = max(
        [np.log10(1 + d).max() for _, d in series]
        + [0.0 if ref is None else np.log10(1 + ref).max(), 0.5]
    )
    img, draw = _canvas(940, 400)  # readable at the page's width: 13-14 px text
    big, small = font(14), font(13)
    x0, x1, y0, y1 = 70, 640, 26, 336  # plot area
    px = lambda v: x0 + (x1 - x0) * np.asarray(v, float)
    py = lambda d: y1 - (y1 - y0) * np.log10(1 + np.asarray(d, float)) / top
    if ref is not None:
        for a, b, d in zip(px(bins[:-1]), px(bins[1:]), py(ref)):
            draw.rectangle([a, d, b, y1], fill=(205, 205, 205))
    for k, (name, dens) in enumerate(series):
        ys = py(dens)
        pts = [(x, y) for a, b, y in zip(px(bins[:-1]), px(bins[1:]), ys) for x in (a, b)]
        draw.line(pts, fill=TAB10[k % 10], width=2)
    tx = float(px(threshold))
    for y in range(y0, y1, 8):
        draw.line([(tx, y), (tx, min(y + 4, y1))], fill=RED, width=1)
    draw.line([(x0, y0), (x0, y1), (x1, y1)], fill=INK)
    for v in np.linspace(0, 1, 6):
        draw.line([(px(v), y1), (px(v), y1 + 4)], fill=INK)
        draw.text((px(v) - 10, y1 + 6), f"{v:.1f}", fill=INK, font=small)
    for d in (0, 1, 10, 100, 1000):
        if np.log10(1 + d) <= top:
            draw.text((x0 - 44, py(d) - 7), f"{d:>4}", fill=INK, font=small)
    draw.text((x0 + 180, y1 + 30), "grid_score (judged images)", fill=INK, font=big)
    draw.text((4, 2), "density (log scale)", fill=INK, font=small)
    legend = [(n, TAB10[k % 10]) for k, (n, _) in enumerate(series)]
    legend += [("natural reference", (205, 205, 205))] if ref is not None else []
    legend += [(f"threshold {threshold}", RED)]
    for k, (name, colour) in enumerate(legend):
        y = y0 + 22 * k
        draw.rectangle([x1 + 16, y + 5, x1 + 40, y + 10], fill=colour)
        draw.text((x1 + 48, y), name[:30], fill=INK, font=small)
    return _png(img)


def _boxes_of_rows(records: pa.Table, rows) -> list[np.ndarray]:
    """The boxes ``(k, 4)`` of the given rows (a handful: never every image's)."""
    fb = flatten_boxes(kernels.take(records.select(["boxes"]), pa.array(rows, pa.int64())))
    xy = np.column_stack(fb.coords()) if fb.offsets[-1] else np.zeros((0, 4))
    return [xy[fb.offsets[k] : fb.offsets[k + 1]] for k in range(len(fb.offsets) - 1)]


@dataclass
class ReportSample:
    """What the report draws, gathered records part by records part so that no part of it
    grows with the dataset: box-centre counts per source, the boxes of the ``k``
    highest-scoring images seen so far (the worst images are among them: an image in the
    global top k is in its own part's top k, ties going to the earlier image), and the
    ``per_source`` highest of each source, for its own gallery. Each kept image carries
    its source and file, so the report can show the photo when it is available."""

    k: int = defaults.AUDIT_WORST
    per_source: int = PER_SOURCE
    heatmaps: dict = field(default_factory=dict)  # source -> (bins, bins) counts
    best: list = field(default_factory=list)  # (-score, row, image_id, boxes, source, file)
    by_source: dict = field(default_factory=dict)  # source -> the same tuples
    rows: int = 0

    def add(self, records: pa.Table, grid_score: np.ndarray, pool=None) -> None:
        """Count the part's box centres and keep its highest-scoring images; given an
        executor ``pool``, the counting runs there beside the rest (NumPy drops the GIL)."""
        names = sorted(kernels.unique(records.column("source")).to_pylist())
        if pool is None:
            heats = source_heatmaps(records, names)
        else:
            counting = pool.submit(source_heatmaps, records, names)
        self.consider(records, grid_score, self.rows)
        if pool is not None:
            heats = counting.result()
        for name, heat in zip(names, heats):
            self.heatmaps[name] = self.heatmaps.get(name, 0) + heat
        self.rows += records.num_rows

    def consider(self, records: pa.Table, grid_score: np.ndarray, start: int) -> None:
        """Keep the part's highest-scoring images (rows from ``start``); an image seen
        before (a second pass with more evidence) keeps its highest score."""
        top = top_k(grid_score, self.k)
        each = _top_per_source(grid_score, records.column("source"), self.per_source)
        rows = np.union1d(top, each)
        kept = self._kept(records, rows, grid_score, start)
        self.best = _first(self.best + [kept[r] for r in top], self.k)
        for r in each:
            src = kept[r][4]
            self.by_source[src] = _first(self.by_source.get(src, []) + [kept[r]], self.per_source)

    def _kept(self, records: pa.Table, rows: np.ndarray, grid_score, start: int) -> dict:
        at = pa.array(rows, pa.int64())
        ids = kernels.take(records.column("image_id"), at).to_pylist()
        srcs = kernels.take(records.column("source"), at).to_pylist()
        has_file = "file" in records.column_names
        files = (
            kernels.take(records.column("file"), at).to_pylist() if has_file else [None] * len(ids)
        )
        boxes = _boxes_of_rows(records, rows)
        return {
            int(r): (-float(grid_score[r]), start + int(r), i, b, s, f)
            for r, i, s, f, b in zip(rows, ids, srcs, files, boxes)
        }

    @classmethod
    def of(cls, records: pa.Table, df: Columns) -> ReportSample:
        sample = cls()
        sample.add(records, column(df, "grid_score"))
        return sample

    def worst_entries(self, worst: list[dict]) -> list:
        """The gate's worst images (with their family), as gallery entries."""
        from analysis.report_gallery import Entry

        kept = {b[2]: b for b in self.best}
        return [
            Entry(w["grid_score"], w["image_id"], w["source"], kept[w["image_id"]][5],
                  kept[w["image_id"]][3], w.get("family", ""))
            for w in worst
            if w["image_id"] in kept
        ]  # fmt: skip


def _top_per_source(grid_score: np.ndarray, sources, k: int) -> np.ndarray:
    """Each source's ``k`` highest-scoring rows (ties to the earlier row, NaN last).

    A top-k per source (one for the usual single-source part): a sort of every row by
    (source, -score, row) took 12 ms of a 200,000-image part. Many sources take that
    sort, where one pass per source would cost more."""
    score = np.nan_to_num(np.asarray(grid_score, float), nan=-np.inf)
    code, names = labels(sources)
    if len(names) <= MANY_SOURCES:
        per = [np.flatnonzero(code == c) for c in range(len(names))]
        return np.concatenate([idx[top_k(score[idx], k)] for idx in per] or [[]]).astype(int)
    order = np.lexsort((np.arange(score.size), -score, code))
    starts = np.flatnonzero(np.r_[True, code[order][1:] != code[order][:-1]])
    rank = np.arange(order.size) - np.repeat(starts, np.diff(np.r_[starts, order.size]))
    return order[rank < k]


def _first(items: list, k: int) -> list:
    """The ``k`` highest-scoring kept tuples, ties to the earlier row (NaN last), each
    image once."""
    seen, out = set(), []
    for b in sorted(items, key=lambda b: (b[0] if b[0] == b[0] else np.inf, b[1])):
        if b[2] not in seen:
            seen.add(b[2])
            out.append(b)
    return out[:k]


def _share_table(result: dict) -> str:
    rows = []
    for s, v in result["grid_share"]["per_source"].items():
        rows.append(
            f"<tr><td>{html.escape(s)}</td><td>{v['n_images']}</td><td>{v['n_judged']}</td>"
            f"<td>{v['n_grid_like']}</td><td>{v['share']:.1%}</td><td>{v['excess']:+.1%}</td>"
            f"<td>{v['binomial_pvalue']:.2g}</td><td>{'FAIL' if v['fails'] else 'ok'}</td></tr>"
        )
    return (
        "<table><tr><th>source</th><th>images</th><th>judged</th><th>grid-like</th>"
        "<th>share</th><th>vs reference</th><th>p</th><th></th></tr>" + "".join(rows) + "</table>"
    )


def render_report(
    df: Columns,
    result: dict,
    reference: dict,
    records: pa.Table | None = None,
    sample: ReportSample | None = None,
    roots: dict | None = None,
) -> str:
    """The page, from the stats frame and either the records or a ``ReportSample``
    gathered while streaming them (what is drawn is the same). ``roots`` maps each
    source to its images root: the worst images are then shown as photos too."""
    sample = ReportSample.of(records, df) if sample is None else sample
    with figures_encoded_aside() as figures:
        # the largest figure first: it encodes while the others are drawn
        worst = _worst_gallery(sample, result["worst_images"], roots or {})
        return figures.fill(_page(df, result, reference, sample, roots or {}, worst))


def _page(df: Columns, result: dict, reference: dict, sample, roots: dict, worst: str) -> str:
    ref_scores = np.asarray(reference.get("scores", []), dtype=float)
    verdict = result["verdict"].upper()
    colour = "#1a7f37" if result["verdict"] == "pass" else "#cf222e"
    comp = result["comparison"]
    ks = comp.get("ks") or {}
    rem = result.get("remediation", {})
    rem_text = (
        f"<p>Remediation: <b>{html.escape(rem['mode'])}</b>; verdict after "
        f"remediation: <b>{rem.get('verdict_after', '-')}</b>.</p>"
        if rem.get("mode", "none") != "none"
        else ""
    )
    body = f"""
<h1>groundset layout audit: <span style="color:{colour}">{verdict}</span></h1>
<p class="summary">{html.escape(result["summary"])}</p>{rem_text}
<p>Dataset: {html.escape(str(result.get("dataset", "")))}; {result["n_images"]} images.
Reference: {html.escape(result["reference"]["name"])} ({result["reference"]["n_judged"]} judged
images, grid share {result["reference"]["grid_share"]:.1%}). KS statistic
{ks.get("statistic", float("nan")):.3f} (p={ks.get("pvalue", float("nan")):.2g}).</p>
<h2>Grid share per source</h2>{_share_table(result)}
<h2>grid_score against the natural reference</h2>{
        _histogram(df, ref_scores, result["thresholds"]["grid_score"])
    }
<h2>Where box centres fall, per source</h2>
<p>A lattice or mosaic shows as stripes or spots on the left and as peaks away from the
centre on the right; natural data gives a smooth blob and a single central peak.</p>
{_source_figures(sample)}
<h2>Worst images</h2>
<p>Left: the boxes the score saw; right: the photo with the same boxes, where its file is
found under the source's images root.</p>
{worst}
<h2>Worst examples per source</h2>
<p>Each source's highest-scoring images, grid-like or not: what a source's share is
made of.</p>
{_source_galleries(sample, roots, MAX_SOURCES)}
"""
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto;}"
        "img{max-width:100%;height:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
        ".summary{font-size:1.1em}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>groundset audit"
        f"</title><style>{style}</style></head><body>{body}</body></html>\n"
    )
