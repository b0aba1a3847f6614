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


def _source_figures(records: pa.Table, df: pd.DataFrame) -> str:
    plt = _plt()
    fb = flatten_boxes(records)
    x0, y0, x1, y1 = fb.coords()
    owner = fb.image
    src = records.column("source").to_numpy(zero_copy_only=False)[owner] if owner.size else []
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    sources = sorted(df["source"].unique())[:MAX_SOURCES]
    if not sources:
        return "<p>No images.</p>"
    fig, axes = plt.subplots(len(sources), 2, figsize=(6.4, 3.0 * len(sources)), squeeze=False)
    for row, s in zip(axes, sources):
        m = np.asarray(src == s)
        heat = centre_heatmap(cx[m], cy[m])
        row[0].imshow(heat, extent=[0, 1, 1, 0], cmap="magma")
        row[0].set_title(f"{s}: box centres ({int(m.sum())} boxes)", fontsize=9)
        row[1].imshow(power_spectrum(heat), cmap="viridis")
        row[1].set_title("2D power spectrum (grids: peaks)", fontsize=9)
        row[1].set_xticks([])
        row[1].set_yticks([])
    fig.tight_layout()
    return _png(fig)


def _histogram(df: pd.DataFrame, ref_scores: np.ndarray, threshold: float) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    bins = np.linspace(0, 1, 41)
    judged = df[~df["low_evidence"].astype(bool)]
    for s, part in list(judged.groupby("source"))[:MAX_SOURCES]:
        ax.hist(part["grid_score"], bins=bins, density=True, histtype="step", label=str(s))
    if len(ref_scores):
        ax.hist(
            ref_scores, bins=bins, density=True, alpha=0.35, color="grey", label="natural reference"
        )
    ax.axvline(threshold, color="red", ls="--", lw=1, label=f"threshold {threshold}")
    ax.set_xlabel("grid_score (judged images)")
    ax.set_ylabel("density")
    ax.set_yscale("symlog")
    ax.legend(fontsize=7)
    return _png(fig)


def _worst_layouts(records: pa.Table, worst: list[dict]) -> str:
    if not worst:
        return "<p>No grid-like images.</p>"
    plt = _plt()
    from matplotlib.patches import Rectangle

    ids = records.column("image_id").to_pylist()
    index = {k: i for i, k in enumerate(ids)}
    rows = [index[w["image_id"]] for w in worst if w["image_id"] in index]
    sub = records.take(pa.array(rows, pa.int64()))
    fb = flatten_boxes(sub)
    offsets, (x0, y0, x1, y1) = fb.offsets, fb.coords()
    ncol = 6
    nrow = int(np.ceil(len(rows) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.6 * ncol, 1.8 * nrow), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= len(rows):
            ax.axis("off")
            continue
        sl = slice(offsets[k], offsets[k + 1])
        for a, b, c, d in zip(x0[sl], y0[sl], x1[sl], y1[sl]):
            ax.add_patch(Rectangle((a, b), c - a, d - b, fill=False, lw=0.8, ec="tab:blue"))
        ax.set_xlim(0, 1)
        ax.set_ylim(1, 0)
        ax.set_aspect("equal")
        w = worst[k]
        ax.set_title(f"{w['image_id'][-18:]}\n{w['family']} {w['grid_score']:.2f}", fontsize=6)
    fig.tight_layout()
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
