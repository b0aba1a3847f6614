"""The train stage: GLIGEN adapters (or a base UNet) from a dataset or an encode cache.

The loop itself is ``trainer/train.py``; this stage only hands it one ``TrainConfig``,
so the CLI and Python callers configure a run through the same fields and defaults.
"""

from __future__ import annotations


def train(**options) -> dict:
    from trainer.train import TrainConfig
    from trainer.train import train as run

    return run(TrainConfig(**options))
