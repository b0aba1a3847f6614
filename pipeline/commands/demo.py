"""``groundset demo``: render the embedded offline demo world (see ``pipeline/demo.py``)."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline import defaults
from pipeline.errors import UserError

Opt = typer.Option


def demo(
    out: Annotated[Path, Opt("--out", help="Directory to write the demo world into.")],
    n_natural: Annotated[
        int, Opt(help="Images of the COCO-format part with natural layouts.")
    ] = defaults.DEMO_N_NATURAL,
    n_unlabelled: Annotated[
        int, Opt(help="Images of the unlabelled folder (detector path).")
    ] = defaults.DEMO_N_UNLABELLED,
    n_grid: Annotated[
        int, Opt(help="Images of the grid-like COCO-format part (lattices and mosaics).")
    ] = defaults.DEMO_N_GRID,
    n_heldout: Annotated[
        int, Opt(help="Held-out natural layouts for evaluation (COCO format).")
    ] = defaults.DEMO_N_HELDOUT,
    size: Annotated[int, Opt(help="Image side in pixels (square images).")] = defaults.DEMO_SIZE,
    seed: Annotated[
        int, Opt(help="Random seed; the same seed and sizes give byte-identical files.")
    ] = defaults.DEMO_SEED,
) -> None:
    """Render the offline demo world: coloured shapes with exact boxes and captions.

    Writes natural/ and grid/ (COCO 2017 layout), unlabelled/ (images + caption sidecar,
    true boxes aside in truth/) and heldout/ (evaluation layouts).
    """
    from pipeline.demo import make_demo

    summary = make_demo(
        out,
        n_natural=n_natural,
        n_unlabelled=n_unlabelled,
        n_grid=n_grid,
        n_heldout=n_heldout,
        size=size,
        seed=seed,
    )
    parts = ", ".join(f"{k} {v['images']}/{v['boxes']}" for k, v in summary["parts"].items())
    typer.echo(f"demo world written to {out} (images/boxes): {parts}", err=True)


def audit_plots(
    audit_dir: Annotated[Path, typer.Argument(help="Output directory of `groundset audit`.")],
) -> None:
    """Bin an audit's grid scores per source into CSVs for `dvc plots show` (DIR/plots/)."""
    from pipeline.audit_plots import write_audit_plots

    out = write_audit_plots(audit_dir)
    typer.echo(f"audit-plots: grid_score histograms per source -> {out}", err=True)


def demo_model(
    out: Annotated[Path, Opt("--out", help="Model folder to write (replaced if it exists).")],
    seed: Annotated[int, Opt(help="Seed of the random weights.")] = 0,
    prediction_type: Annotated[
        str, Opt(help="What the UNet predicts: sample (x0), epsilon or v_prediction.")
    ] = "sample",
    clip_sample: Annotated[
        bool, Opt(help="Clip predicted pixels to [-1, 1] while sampling.")
    ] = True,
) -> None:
    """Write the demo's tiny diffusers model: 32 px pixel space, attention at 8x8 only.

    The same folder as `init-model --tiny --pixel` with a UNet that is several times
    faster on a CPU, so the demo's base pretrain and adapters fit in minutes.
    """
    from pipeline.demo_model import write_demo_model

    path = write_demo_model(out, seed=seed, prediction_type=prediction_type, clip_sample=clip_sample)
    typer.echo(f"demo-model: tiny fast pixel-space model -> {path}", err=True)


def denoise_gap_command(
    model: Annotated[str, Opt("--model", help="diffusers model folder the adapters belong to.")],
    adapters: Annotated[Path, Opt("--adapters", help="Trained adapters (.safetensors).")],
    layouts: Annotated[Path, Opt("--layouts", help="Held-out dataset directory (with images).")],
    out: Annotated[Path, Opt("--out", help="JSON metrics file to write.")],
    timesteps: Annotated[
        str, Opt(help="Comma-separated fixed timesteps to measure at.")
    ] = "100,300,500,700,900",
    limit: Annotated[int, Opt(help="Measure on the first N held-out images.")] = 64,
    seed: Annotated[int, Opt(help="Seed of the fixed noise.")] = 0,
) -> None:
    """Held-out denoising loss with the gated layers on vs off (same weights, same noise).

    gap = loss_off - loss_on > 0 means the adapters use the layout: a signal that moves
    long before a detector's AP does on a tiny CPU model.
    """
    from pipeline.denoise_gap import denoise_gap

    try:
        ts = tuple(int(t) for t in timesteps.split(","))
    except ValueError:
        raise UserError(f"--timesteps must be comma-separated integers, got {timesteps!r}") from None
    r = denoise_gap(model, adapters, layouts, out, timesteps=ts, limit=limit, seed=seed)
    typer.echo(
        f"denoise-gap: mean relative gap {r['mean_relative_gap']:+.4f} over {r['n_images']} "
        f"held-out images -> {out}",
        err=True,
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("audit-plots")(audit_plots)
    app.command("demo-model")(demo_model)
    app.command("denoise-gap")(denoise_gap_command)
