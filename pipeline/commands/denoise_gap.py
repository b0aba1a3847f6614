"""``groundset denoise-gap``: held-out loss with the gates on, off, and on a shuffled layout."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import Overwrite
from pipeline.core import defaults
from pipeline.core.errors import UserError

Opt = typer.Option


def denoise_gap_command(
    model: Annotated[str, Opt("--model", help="diffusers model folder the adapters belong to.")],
    adapters: Annotated[Path, Opt("--adapters", help="Trained adapters (.safetensors).")],
    layouts: Annotated[Path, Opt("--layouts", help="Held-out dataset directory (with images).")],
    out: Annotated[Path, Opt("--out", help="JSON metrics file to write.")],
    timesteps: Annotated[
        str, Opt(help="Comma-separated fixed timesteps to measure at.")
    ] = ",".join(map(str, defaults.DENOISE_GAP_TIMESTEPS)),
    limit: Annotated[
        int, Opt(help="Measure on the first N held-out images.")
    ] = defaults.DENOISE_GAP_LIMIT,
    seed: Annotated[int, Opt(help="Seed of the fixed noise.")] = defaults.SEED,
    overwrite: Overwrite = False,
) -> None:
    """Held-out denoising loss with the gated layers on vs off (same weights, same noise).

    gap = loss_off - loss_on > 0 means the adapters use the layout: a signal that moves
    long before a detector's AP does on a tiny CPU model.
    """
    from pipeline.stages.denoise_gap import denoise_gap

    try:
        ts = tuple(int(t) for t in timesteps.split(","))
    except ValueError:
        raise UserError(
            f"--timesteps must be comma-separated integers, got {timesteps!r}"
        ) from None
    r = denoise_gap(
        model, adapters, layouts, out, timesteps=ts, limit=limit, seed=seed, overwrite=overwrite
    )
    typer.echo(
        f"denoise-gap: mean relative gap {r['mean_relative_gap']:+.4f} over {r['n_images']} "
        f"held-out images -> {out}",
        err=True,
    )


def register(app: typer.Typer) -> None:
    app.command("denoise-gap")(denoise_gap_command)
