"""The noise-schedule arithmetic that training and sampling must agree on.

A diffusion model silently loses detail when training and sampling disagree about the
schedule: the target of the wrong ``prediction_type``, a timestep taken as an index, a
float timestep rounded differently. Training and sampling therefore both take the
schedule from the model's own scheduler config and go through these few functions,
which ``tests/test_sampling.py`` checks against each other.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from pipeline.errors import UserError

SAMPLERS = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}


def sample_timesteps(scheduler: DDPMScheduler, n: int, device=None, generator=None) -> torch.Tensor:
    """Training timesteps, uniform over the scheduler's integer steps, as int64 (what add_noise indexes with)."""
    return torch.randint(
        0,
        scheduler.config.num_train_timesteps,
        (n,),
        device=device,
        generator=generator,
        dtype=torch.long,
    )


def training_target(
    scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet must predict for ``scheduler.add_noise(latents, noise, timesteps)``."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise UserError(f"unknown prediction_type {kind!r} in the model's scheduler config")


def make_sampler(scheduler: DDPMScheduler, name: str):
    """A sampling scheduler built from the training scheduler's config (same betas, same prediction_type)."""
    try:
        cls = SAMPLERS[name]
    except KeyError:
        raise UserError(
            f"unknown scheduler {name!r}; choose one of {', '.join(SAMPLERS)}"
        ) from None
    return cls.from_config(scheduler.config)
