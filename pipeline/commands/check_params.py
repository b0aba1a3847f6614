"""``groundset check-params``: the first DVC stage, so a bad ``params.yaml`` stops a run
before any stage has done work, with one line naming the bad key (exit 2).

Without it a misspelt key or a wrong-typed value surfaces only when the stage that reads
it runs, possibly an hour in. The marker it writes says nothing about the values: the
stages that depend on it (the roots of the DAG, so that DVC orders this check first)
must not rerun when an unrelated param changes; their own ``params:`` decide that.
"""

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def check_params(
    params_file: Annotated[
        Path, typer.Argument(help="Params file to validate against pipeline/core/params.py.")
    ] = Path("params.yaml"),
    *,
    out: Annotated[Path, Opt("--out", help="Marker file written only when the params are valid.")],
) -> None:
    """Validate a params file (schema and value ranges); exit 2 naming the first misfit."""
    from pipeline.core.params import load

    load(params_file)
    _write_text_atomically(out, f"{params_file.name} is valid\n")
    typer.echo(f"check-params: {params_file} is valid -> {out}", err=True)


def _write_text_atomically(path: Path, text: str) -> None:
    # A killed run must not leave a half-written marker that DVC would then trust.
    # (Switch to pipeline.core.atomic once that module has landed.)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)  # mkstemp makes the file private; give it the usual mode
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def register(app: typer.Typer) -> None:
    app.command("check-params")(check_params)
