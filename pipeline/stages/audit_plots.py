"""Plot data for ``dvc plots show`` from an audit directory's ``layout_stats.parquet``.

DVC renders CSV/TSV/JSON, not Parquet, so the audit's per-image scores are binned here
into one small CSV per source (``plots/grid_score_<source>.csv``: bin centre, share of
that source's judged images). DVC draws the files of one plot directory as one chart
with a line per source, which is the audit's histogram comparison in the DVC UI.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.core.atomic import atomic_output_dir
from pipeline.core.errors import UserError

BINS = 20
STATS = "layout_stats.parquet"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "unnamed"


def write_audit_plots(audit_dir: str | Path, bins: int = BINS) -> Path:
    """Write ``audit_dir/plots/`` atomically and return it."""
    audit_dir = Path(audit_dir)
    stats = audit_dir / STATS
    if not stats.is_file():
        raise UserError(f"{audit_dir} has no {STATS}; run `groundset audit` first")
    table = pq.read_table(stats, columns=["source", "grid_score", "low_evidence"])
    source = np.asarray(table.column("source").to_pylist(), dtype=object)
    score = table.column("grid_score").to_numpy(zero_copy_only=False).astype(float)
    judged = ~table.column("low_evidence").to_numpy(zero_copy_only=False).astype(bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    with atomic_output_dir(audit_dir / "plots", kind="audit-plots") as tmp:
        for name in sorted(set(source.tolist())):
            pick = judged & (source == name)
            counts, _ = np.histogram(np.clip(score[pick], 0, 1), bins=edges)
            share = counts / max(int(pick.sum()), 1)
            lines = ["grid_score,share_of_judged_images"]
            lines += [f"{c:.3f},{s:.6f}" for c, s in zip(centres, share)]
            (tmp / f"grid_score_{_safe(name)}.csv").write_text("\n".join(lines) + "\n")
        out = audit_dir / "plots"
    return out
