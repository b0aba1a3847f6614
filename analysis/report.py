"""A self-contained HTML audit report (inline base64 PNGs; opens offline, no assets).

It shows what a reviewer needs to trust or overrule the gate: the verdict in plain
words, grid shares per source, where box centres fall per source and the 2D power
spectrum of that heatmap (a lattice shows as off-centre peaks), the grid-score histogram
against the natural reference, and the worst images drawn as box layouts.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.records import flatten_boxes

HEATMAP_BINS = 48
MAX_SOURCES = 12


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return (
        f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
    )


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def centre_heatmap(cx: np.ndarray, cy: np.ndarray, bins: int = HEATMAP_BINS) -> np.ndarray:
    h, _, _ = np.histogram2d(cy, cx, bins=bins, range=[[0, 1], [0, 1]])
    return h


def power_spectrum(heat: np.ndarray) -> np.ndarray:
    """log power of the mean-removed heatmap, DC centred; periodic layouts give peaks."""
    f = np.fft.fftshift(np.fft.fft2(heat - heat.mean()))
    return np.log1p(np.abs(f) ** 2)


def _codes(column) -> tuple[np.ndarray, list[str]]:
    """Per-row integer codes of a string column and the values they stand for."""
    enc = pc.dictionary_encode(column)
    enc = enc.combine_chunks() if isinstance(enc, pa.ChunkedArray) else enc
    return enc.indices.to_numpy(zero_copy_only=False), enc.dictionary.to_pylist()


def source_heatmaps(records: pa.Table, sources: list[str], bins: int = HEATMAP_BINS):
    """Box-centre counts per source, ``(len(sources), bins, bins)``, rows = y.

    One ``bincount`` over every box, chunk by chunk and on the four coordinates only, so
    the figure drawn from it costs the same for 1,000 or 10,000,000 images.
    """
    heat = np.zeros(len(sources) * bins * bins, np.int64)
    want = {s: k for k, s in enumerate(sources)}
    edges = np.linspace(0, 1, bins + 1)
    for batch in records.select(["source", "boxes"]).to_batches():
        code, names = _codes(batch.column(0))
        lut = np.array([want.get(n, -1) for n in names] + [-1], np.int64)
        lists = batch.column(1)
        lists = lists.fill_null([]) if lists.null_count else lists
        off = np.asarray(lists.offsets, np.int64)
        owner_src = np.repeat(lut[code] if code.size else code, np.diff(off))
        flat = pc.list_flatten(lists)
        x0, y0, x1, y1 = (
            flat.field(k).to_numpy(zero_copy_only=False) for k in ("x0", "y0", "x1", "y1")
        )
        # np.histogram2d's bins exactly: float64 centres placed among the same edges
        ix = np.clip(np.searchsorted(edges, (x0 + x1.astype(float)) / 2, "right") - 1, 0, bins - 1)
        iy = np.clip(np.searchsorted(edges, (y0 + y1.astype(float)) / 2, "right") - 1, 0, bins - 1)
        keep = owner_src >= 0
        key = (owner_src * bins + iy) * bins + ix
        heat += np.bincount(key[keep], minlength=heat.size)
    return heat.reshape(len(sources), bins, bins)


def _source_figures(records: pa.Table, df: pd.DataFrame) -> str:
    sources = sorted(df["source"].unique())[:MAX_SOURCES]
    if not sources:
        return "<p>No images.</p>"
    heats = source_heatmaps(records, [str(s) for s in sources])
    plt = _plt()
    fig, axes = plt.subplots(len(sources), 2, figsize=(6.4, 3.0 * len(sources)), squeeze=False)
    for row, s, heat in zip(axes, sources, heats):
        row[0].imshow(heat, extent=[0, 1, 1, 0], cmap="magma")
        row[0].set_title(f"{s}: box centres ({int(heat.sum())} boxes)", fontsize=9)
        row[1].imshow(power_spectrum(heat.astype(float)), cmap="viridis")
        row[1].set_title("2D power spectrum (grids: peaks)", fontsize=9)
        row[1].set_xticks([])
        row[1].set_yticks([])
    fig.tight_layout()
    return _png(fig)


def score_histograms(df: pd.DataFrame, bins: np.ndarray) -> dict[str, np.ndarray]:
    """Judged grid scores per source as counts on fixed bins (the figure's only input)."""
    judged = ~df["low_evidence"].to_numpy(bool)
    scores = df["grid_score"].to_numpy(float)[judged]
    code, names = _codes(pa.array(df["source"].to_numpy(object)[judged], pa.string()))
    nb = bins.size - 1
    b = np.clip(np.searchsorted(bins, scores, side="right") - 1, 0, nb - 1)
    counts = np.bincount(code * nb + b, minlength=len(names) * nb).reshape(len(names), nb)
    return {str(n): counts[k] for k, n in sorted(enumerate(names), key=lambda kv: kv[1])}


def _histogram(df: pd.DataFrame, ref_scores: np.ndarray, threshold: float) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    bins = np.linspace(0, 1, 41)
    width = np.diff(bins)
    for s, counts in list(score_histograms(df, bins).items())[:MAX_SOURCES]:
        if counts.sum():
            ax.stairs(counts / (counts.sum() * width), bins, label=str(s))
    if len(ref_scores):
        counts, _ = np.histogram(ref_scores, bins=bins)
        ax.stairs(
            counts / (counts.sum() * width),
            bins,
            fill=True,
            alpha=0.35,
            color="grey",
            label="natural reference",
        )
    ax.axvline(threshold, color="red", ls="--", lw=1, label=f"threshold {threshold}")
    ax.set_xlabel("grid_score (judged images)")
    ax.set_ylabel("density")
    ax.set_yscale("symlog")
    ax.legend(fontsize=7)
    return _png(fig)


def worst_layouts(records: pa.Table, worst: list[dict]) -> list[tuple[dict, np.ndarray]]:
    """The boxes ``(k, 4)`` of each listed image: a hash lookup of at most AUDIT_WORST ids,
    never a Python list of every id."""
    ids = pa.array([w["image_id"] for w in worst], pa.string())
    rows = pc.index_in(ids, value_set=records.column("image_id")).to_pylist()
    found = [(w, r) for w, r in zip(worst, rows) if r is not None]
    sub = records.select(["boxes"]).take(pa.array([r for _, r in found], pa.int64()))
    fb = flatten_boxes(sub)
    xy = np.column_stack(fb.coords()) if fb.offsets[-1] else np.zeros((0, 4))
    return [(w, xy[fb.offsets[k] : fb.offsets[k + 1]]) for k, (w, _) in enumerate(found)]


def _worst_layouts(records: pa.Table, worst: list[dict]) -> str:
    """The worst images drawn as box layouts, all in one axes (one cell per image): a grid
    of 24 axes cost 10x more to lay out and draw."""
    layouts = worst_layouts(records, worst)
    if not layouts:
        return "<p>No grid-like images.</p>"
    plt = _plt()
    from matplotlib.collections import PolyCollection

    ncol = 6
    nrow = int(np.ceil(len(layouts) / ncol))
    fig, ax = plt.subplots(figsize=(1.6 * ncol, 1.8 * nrow))
    polys, frames = [], []
    for k, (w, xy) in enumerate(layouts):
        ox, oy = (k % ncol) * 1.15, (k // ncol) * 1.45
        frames.append([(ox, oy), (ox + 1, oy), (ox + 1, oy + 1), (ox, oy + 1)])
        polys += [
            [(ox + a, oy + b), (ox + c, oy + b), (ox + c, oy + d), (ox + a, oy + d)]
            for a, b, c, d in xy
        ]
        ax.text(
            ox + 0.5,
            oy - 0.04,
            f"{w['image_id'][-18:]}\n{w['family']} {w['grid_score']:.2f}",
            fontsize=6,
            ha="center",
            va="bottom",
        )
    ax.add_collection(PolyCollection(frames, facecolors="none", edgecolors="0.6", lw=0.6))
    ax.add_collection(PolyCollection(polys, facecolors="none", edgecolors="tab:blue", lw=0.8))
    ax.set_xlim(-0.05, ncol * 1.15)
    ax.set_ylim(nrow * 1.45, -0.35)
    ax.set_aspect("equal")
    ax.axis("off")
    return _png(fig)


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


def render_report(df: pd.DataFrame, result: dict, reference: dict, records: pa.Table) -> str:
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
{_source_figures(records, df)}
<h2>Worst images (box layouts)</h2>{_worst_layouts(records, result["worst_images"])}
"""
    style = (
        "body{font-family:sans-serif;max-width:900px;margin:2em auto;}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
        ".summary{font-size:1.1em}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>groundset audit"
        f"</title><style>{style}</style></head><body>{body}</body></html>\n"
    )
