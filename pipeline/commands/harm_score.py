"""``groundset harm-score``: one arm of the harm sweep in one metrics file (docs/harm.md),
a thin CLI over :func:`pipeline.stages.harm_score.harm_score`."""

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def harm_score_command(
    eval_dir: Annotated[Path, typer.Argument(help="The arm's groundset evaluate --out.")],
    mix: Annotated[Path, Opt("--mix", help="The arm's groundset contaminate --out.")],
    trained_on: Annotated[
        Path, Opt("--trained-on", help="The dataset the adapters were trained on.")
    ],
    out: Annotated[Path, Opt("--out", help="arm.json to write (a DVC metrics file).")],
    audit: Annotated[
        Path | None, Opt("--audit", help="The arm's groundset audit --out (its verdict).")
    ] = None,
    strip: Annotated[
        Path | None, Opt("--strip", help="PNG of sample images, one row per beta.")
    ] = None,
) -> None:
    """Gather an arm's mix, audit verdict and per-beta scores, and add the tiling score at
    the model's resolution (32 px images enlarged 2x, not 8x, so a one-pixel seam stays visible)."""
    from pipeline.stages.harm_score import harm_score

    arm = harm_score(eval_dir, mix, trained_on, out, audit=audit, strip=strip)
    top = arm["betas"][max(arm["betas"], key=float)]
    typer.echo(
        f"harm-score: share {arm['share']:g}, beta {max(arm['betas'], key=float)}: "
        f"tiling {top['tiling_model_res']:.3f} (share {top['tiling_model_res_share']:.2f}), "
        f"AP50 {top['ap50']:.3f} -> {out}"
    )


def register(app: typer.Typer) -> None:
    app.command("harm-score")(harm_score_command)
