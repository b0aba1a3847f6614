"""Sampling schedulers built from the model's own training schedule.

A diffusion model silently loses detail when training and sampling disagree about the
schedule (another beta schedule, another ``prediction_type``, a timestep taken as an
index). Samplers are therefore never configured by hand: they are diffusers' DDIM or
DPM-Solver built from the training ``DDPMScheduler``'s config. The training target and
its inverse live in ``trainer/objective.py``; ``tests/trainer/test_sampling.py`` checks the two
sides against each other.
"""

from __future__ import annotations

from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from pipeline.core.errors import UserError

SAMPLERS = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}


def make_sampler(scheduler: DDPMScheduler, name: str):
    """A sampling scheduler with the training scheduler's betas and prediction_type."""
    try:
        cls = SAMPLERS[name]
    except KeyError:
        raise UserError(
            f"unknown scheduler {name!r}; choose one of {', '.join(SAMPLERS)}"
        ) from None
    return cls.from_config(scheduler.config)
