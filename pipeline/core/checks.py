"""Value checks shared by the CLI, the trainer and ``params.yaml`` validation.

A value that enters through a command line, a ``TrainConfig`` or a DVC params file is
judged by the same function, so the three can never disagree about what is valid.
"""

from __future__ import annotations

from pipeline.core import defaults as D
from pipeline.core.errors import UserError


def check_timestep_bias(bias: str, multiplier: float, portion: float) -> None:
    """diffusers' SDXL-script timestep bias: a known kind, a positive weight, a share in (0, 1]."""
    if bias not in D.TIMESTEP_BIASES:
        raise UserError(f"--timestep-bias must be one of {D.TIMESTEP_BIASES}, got {bias!r}")
    if bias == "none" or multiplier == 1.0:
        return
    if multiplier <= 0 or not 0 < portion <= 1:
        raise UserError(
            "--timestep-bias-multiplier must be > 0 and --timestep-bias-portion in (0, 1]"
        )
