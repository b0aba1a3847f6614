"""The check-params stage: the first DVC stage, so a bad ``params.yaml`` stops a run
before any stage has done work, with one line naming the bad key (exit 2).

Without it a misspelt key or a wrong-typed value surfaces only when the stage that reads
it runs, possibly an hour in. The marker it writes says nothing about the values: the
stages that depend on it (the roots of the DAG, so that DVC orders this check first)
must not rerun when an unrelated param changes; their own ``params:`` decide that.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.atomic import atomic_write_text
from pipeline.core.outputs import claim_output
from pipeline.core.params import load


def check_params(params_file: str | Path, out: str | Path) -> None:
    params_file = Path(params_file)
    with claim_output(out, kind="check-params", inputs=[params_file], is_file=True):
        load(params_file)
        atomic_write_text(out, f"{params_file.name} is valid\n")
