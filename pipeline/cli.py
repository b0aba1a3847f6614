"""The ``groundset`` command line: a thin Typer app, one command per stage.

Each command module parses options and calls a plain stage function; heavy imports
(torch, ultralytics) happen inside the commands so ``groundset --help`` stays fast.
All user errors surface here as one stderr line and a documented exit code.
"""

import os
import sys

import typer

from pipeline.commands import (
    audit,
    curate,
    demo,
    detector,
    evaluate,
    export,
    ingest,
    label,
    model,
    train,
)
from pipeline.errors import UserError

app = typer.Typer(
    name="groundset",
    help=(
        "Build grounding data for GLIGEN (COCO ingest, YOLO pseudo-labels), audit box "
        "layouts for grid regularity before training, train gated adapters on a frozen "
        "diffusers UNet, and evaluate them.\n\nExit codes: 0 ok, 2 bad input, 3 audit gate failed."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _global(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars (for DVC logs)."),
) -> None:
    if quiet:
        os.environ["GROUNDSET_QUIET"] = "1"


for _module in (ingest, curate, export, label, detector, audit, model, train, evaluate, demo):
    _module.register(app)


def main() -> None:
    try:
        app()
    except UserError as e:
        print(f"groundset: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("groundset: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
