"""``groundset audit``: a thin CLI over :func:`pipeline.stages.audit.run_audit`."""

import os
from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import Overwrite, parts_scheduler
from pipeline.core import defaults

Opt = typer.Option


def audit_command(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory to audit.")],
    out: Annotated[
        Path,
        Opt(
            "--out",
            help="Audit directory: layout_stats.parquet, "
            "audit.json, report.html (and weights.parquet).",
        ),
    ],
    reference: Annotated[
        Path | None,
        Opt(
            "--reference",
            help="Natural reference: a dataset directory (scored like the data, with "
            "--pixels too) or a reference JSON. Default: the built-in COCO reference "
            "(box scores only).",
        ),
    ] = None,
    max_grid_share: Annotated[
        float,
        Opt(
            "--max-grid-share",
            help="Largest allowed excess of the grid-like share over "
            "the reference (0.05 = 5 points).",
        ),
    ] = defaults.MAX_GRID_SHARE,
    threshold: Annotated[
        float, Opt("--threshold", help="grid_score at or above which an image is grid-like.")
    ] = defaults.GRID_SCORE_THRESHOLD,
    alpha: Annotated[
        float, Opt("--alpha", help="Significance the share excess also needs (binomial test).")
    ] = defaults.AUDIT_ALPHA,
    remediate: Annotated[
        str,
        Opt(
            "--remediate",
            help="none: only judge. filter: drop grid-like images into "
            "--remediated-out (rejected as grid_like). downweight: "
            "write weights.parquet (image_id -> weight) for the trainer. split: like "
            "filter, but mosaics and tiled composites are cut into their tiles, each a "
            "new record (rejected as split_into_tiles).",
        ),
    ] = defaults.REMEDIATE,
    remediated_out: Annotated[
        Path | None, Opt("--remediated-out", help="Dataset directory for the remediated data.")
    ] = None,
    scheduler: parts_scheduler() = None,
    pixels: Annotated[
        bool,
        Opt(
            "--pixels",
            help="Also score the training images themselves for tiling (files under each "
            "source's images root): catches composites whose boxes are too few to judge.",
        ),
    ] = False,
    overwrite: Overwrite = False,
) -> None:
    """Score box layouts for grid regularity and gate the dataset before training.

    Exit code 0 when the data may be trained on, 3 when the grid-like share is too far
    above the natural reference. With --remediate, the exit code judges the remediated data.
    """
    # No linear algebra here: without a limit OpenBLAS starts a thread per core when
    # NumPy is imported, and it spun 0.1 s of CPU of a 1.5 s audit. A user's value wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from pipeline.core.arrow_env import skip_pandas_probe, use_jemalloc

    use_jemalloc()  # before pyarrow is imported: freed memory goes back between parts
    from pipeline.core.errors import GateFailed
    from pipeline.stages.audit import run_audit

    skip_pandas_probe()  # the audit converts no pandas data: save pyarrow's 0.4 s probe

    result = run_audit(
        dataset,
        out,
        reference=reference,
        threshold=threshold,
        max_grid_share=max_grid_share,
        alpha=alpha,
        remediate=remediate,
        remediated_out=remediated_out,
        scheduler=scheduler,
        overwrite=overwrite,
        pixels=pixels,
    )
    typer.echo(f"audit: {result['verdict']}: {result['summary']} -> {out / 'report.html'}")
    if "pixels" in result:
        p = result["pixels"]
        typer.echo(
            f"audit: pixels: {p['images_scored']} images scored "
            f"({p['images_per_second']} img/s), {p['images_without_file']} without a file"
        )
    rem = result["remediation"]
    if rem["mode"] != "none":
        done = (
            f"{rem['images_removed']} grid-like images removed"
            if rem["mode"] in ("filter", "split")
            else f"grid-like images weighted {rem['grid_like_weight']:.3f}"
        )
        counts = rem.get("counts") or {}
        if rem["mode"] == "split" and counts:
            n_split = counts["images_rejected"].get("split_into_tiles", 0)
            n_tiles = counts.get("images_added", {}).get("split_into_tiles", 0)
            done += f", {n_split} of them split into {n_tiles} tiles"
        typer.echo(f"audit: after remediation ({rem['mode']}: {done}): {rem['verdict_after']}")
    if rem.get("out"):
        typer.echo(f"audit: data for training -> {rem['out']}")
    if result["final_verdict"] != "pass":
        held = f"; {remediated_out} was not written" if remediated_out is not None else ""
        raise GateFailed(f"audit gate failed for {dataset}{held}; see {out / 'report.html'}")


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_command)
