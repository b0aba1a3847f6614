"""The train stage: GLIGEN adapters (or a base UNet) from a dataset or an encode cache.

The loop itself is ``trainer/train.py``; this stage only hands it one ``TrainConfig``,
so the CLI and Python callers configure a run through the same fields and defaults.
"""

from __future__ import annotations

import contextlib

from pipeline.core.dataset import dataset_input_paths
from pipeline.core.outputs import claim_output, no_empty_output_on_failure


def train(*, overwrite: bool = False, **options) -> dict:
    from trainer.train import KIND, TrainConfig, acc_main_process
    from trainer.train import train as run

    inputs = [options["model"], *dataset_input_paths(options["data"]), options.get("weights")]
    # Under `accelerate launch` every process runs this; the main one holds the run folder.
    claim = claim_output(options["out"], kind=KIND, inputs=inputs, overwrite=overwrite)
    held = claim if acc_main_process() else contextlib.nullcontext()
    with held, no_empty_output_on_failure(options["out"]):
        return run(TrainConfig(**options))
