"""Evaluation outputs: metrics.json, the DVC plot file, its PNG and a self-contained report.html.

``metrics.json`` is what ``dvc metrics show/diff`` reads, so it keeps one flat block per
run; ``plots/beta_sweep.csv`` is what ``dvc plots`` draws (AP50 and grid effect against
beta). The HTML inlines every picture as base64 so it can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from pipeline.core.atomic import atomic_write_bytes, atomic_write_text
from pipeline.core.images import read_rgb

PLOT_CSV = Path("plots") / "beta_sweep.csv"
PLOT_PNG = Path("plots") / "beta_sweep.png"
PLOT_COLUMNS = ["beta", "ap", "ap50", "ap75", "grid_score", "tiling_score", "n_images"]


def clean(x):
    """JSON has no NaN: an undefined number is written as null."""
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [clean(v) for v in x]
    if isinstance(x, float | np.floating):
        return None if math.isnan(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_metrics(out: Path, metrics: dict) -> Path:
    path = out / "metrics.json"
    atomic_write_text(path, json.dumps(clean(metrics), indent=2) + "\n")
    return path


def write_plot_csv(out: Path, sweep: dict) -> Path:
    lines = [",".join(PLOT_COLUMNS)]
    for beta in sorted(sweep, key=float):
        row = {**sweep[beta], "beta": float(beta)}
        lines.append(
            ",".join("" if clean(row.get(c)) is None else f"{row[c]:g}" for c in PLOT_COLUMNS)
        )
    atomic_write_text(out / PLOT_CSV, "\n".join(lines) + "\n")
    return out / PLOT_CSV


def plot_png(sweep: dict, references: dict | None = None) -> bytes:
    """AP50 and both grid-effect scores against beta, reference runs as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    betas = sorted(sweep, key=float)
    x = [float(b) for b in betas]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    series = [
        ("ap50", "AP50 (layout following)", "C0"),
        ("grid_score", "grid score of detections", "C3"),
        ("tiling_score", "image tiling score", "C1"),
    ]
    for key, label, color in series:
        y = [np.nan if sweep[b].get(key) is None else sweep[b][key] for b in betas]
        ax.plot(x, y, "o-", color=color, label=label)
        for ref in (references or {}).values():
            if ref.get(key) is not None and not math.isnan(ref[key]):
                ax.axhline(ref[key], color=color, ls="--", lw=0.8, alpha=0.7)
    ax.set_xlabel("scheduled-sampling beta (share of steps with grounding)")
    ax.set_ylabel("score")
    ax.set_ylim(-0.02, 1.02)
    title = "beta sweep" + (f" (dashed: {', '.join(references)})" if references else "")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_plot_png(out: Path, sweep: dict, references: dict | None = None) -> Path:
    atomic_write_bytes(out / PLOT_PNG, plot_png(sweep, references))
    return out / PLOT_PNG


def draw_boxes(path, boxes_norm: np.ndarray, labels, thumb: int = 192) -> bytes:
    """A PNG thumbnail of an image with its requested boxes drawn on it."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(read_rgb(path))
    scale = thumb / max(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
    draw = ImageDraw.Draw(im)
    wh = np.array([im.width, im.height, im.width, im.height], dtype=np.float64)
    for k, (b, lab) in enumerate(zip(np.asarray(boxes_norm).reshape(-1, 4) * wh, labels)):
        color = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0")[k % 6]
        draw.rectangle(b.tolist(), outline=color, width=2)
        draw.text((b[0] + 2, b[1] + 1), str(lab)[:18], fill=color)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _img_tag(png: bytes, title: str = "") -> str:
    data = base64.b64encode(png).decode()
    return f'<img src="data:image/png;base64,{data}" title="{html.escape(title)}">'


def _fmt(v) -> str:
    v = clean(v)
    return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def write_report(out: Path, metrics: dict, galleries: dict, plot: bytes | None) -> Path:
    """``galleries`` maps a run name to a list of (png bytes, caption) tuples."""
    runs = metrics.get("runs", {})
    cols = [
        "ap",
        "ap50",
        "ap75",
        "grid_score",
        "grid_share",
        "tiling_score",
        "tiling_share",
        "n_images",
        "n_unscorable",
    ]
    head = "".join(f"<th>{c}</th>" for c in ["run", *cols])
    rows = "".join(
        "<tr><td>"
        + html.escape(name)
        + "</td>"
        + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols)
        + "</tr>"
        for name, r in runs.items()
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>groundset evaluation</title>",
        (
            "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            ".g img{margin:2px;border:1px solid #ddd}.note{color:#555;max-width:60em}</style></head><body>"
        ),
        "<h1>groundset evaluation</h1>",
        (
            "<p class='note'>AP/AP50/AP75: COCOeval of detections on the images against the "
            "<em>requested</em> boxes (YOLO score, as in the GLIGEN paper). grid_score: the audit's "
            "grid-regularity score of the detected objects (images with enough objects). "
            "tiling_score: image-space seams and periodic spectral peaks. Lower beta grounds "
            "fewer denoising steps: less grid effect, weaker layout following.</p>"
        ),
        f"<table><tr>{head}</tr>{rows}</table>",
    ]
    fid = metrics.get("fid")
    if fid is not None:
        parts.append(f"<p class='note'>FID: {html.escape(json.dumps(clean(fid)))}</p>")
    unscorable = metrics.get("unscorable_by_category") or {}
    if unscorable:
        parts.append(
            "<p class='note'>Requested boxes the detector cannot score (category unknown to it): "
            + html.escape(", ".join(f"{k}: {v}" for k, v in unscorable.items()))
            + "</p>"
        )
    if plot:
        parts.append(_img_tag(plot, "beta sweep"))
    for name, items in galleries.items():
        parts.append(f"<h2>{html.escape(name)}</h2><div class='g'>")
        parts.extend(_img_tag(png, cap) for png, cap in items)
        parts.append("</div>")
    parts.append("</body></html>\n")
    atomic_write_text(out / "report.html", "\n".join(parts))
    return out / "report.html"
