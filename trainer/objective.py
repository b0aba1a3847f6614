"""The diffusion training objective and its inverse, in one place.

The loss target and the one-step reconstruction must agree with the scheduler's
``prediction_type``; getting either wrong trains a model that slowly loses detail, so
both live here, next to each other, and the detail monitor uses the inverse to check
the forward direction during training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.core import defaults as D
from pipeline.core.checks import check_timestep_bias
from pipeline.core.errors import UserError


def training_target(scheduler, latents, noise, timesteps) -> torch.Tensor:
    """What the UNet must predict for ``add_noise(latents, noise, timesteps)``."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise UserError(f"unsupported prediction_type {kind!r} in the model's scheduler config")


def predict_x0(scheduler, noisy, prediction, timesteps) -> torch.Tensor:
    """Invert ``training_target``: the clean latents implied by one UNet prediction."""
    a = scheduler.alphas_cumprod.to(noisy.device)[timesteps.to(noisy.device)].float()
    a = a.view(-1, *([1] * (noisy.ndim - 1)))
    kind = scheduler.config.prediction_type
    x, p = noisy.float(), prediction.float()
    if kind == "epsilon":
        return (x - (1 - a).sqrt() * p) / a.sqrt()
    if kind == "v_prediction":
        return a.sqrt() * x - (1 - a).sqrt() * p
    if kind == "sample":
        return p
    raise UserError(f"unsupported prediction_type {kind!r} in the model's scheduler config")


def timestep_weights(
    num_timesteps: int,
    bias: str = D.TIMESTEP_BIAS,
    multiplier: float = D.TIMESTEP_BIAS_MULTIPLIER,
    portion: float = D.TIMESTEP_BIAS_PORTION,
) -> torch.Tensor | None:
    """Sampling weights over timesteps, as diffusers' SDXL training script's ``--timestep_bias_*``.

    ``later`` multiplies the weight of the last ``portion`` of timesteps (the noisiest,
    where a sample's layout is decided) by ``multiplier``. None means uniform, GLIGEN's
    choice, and keeps the exact uniform draw.
    """
    check_timestep_bias(bias, multiplier, portion)
    if bias == "none" or multiplier == 1.0:
        return None
    w = torch.ones(num_timesteps, dtype=torch.float64)
    k = max(1, int(portion * num_timesteps))
    w[slice(-k, None) if bias == "later" else slice(0, k)] *= multiplier
    return w / w.sum()


def unet_cond(hidden, pooled=None, time_ids=None) -> dict:
    """A caption's conditioning as UNet keyword arguments.

    SD 1.x reads the hidden states only; SDXL also adds the pooled embedding and its
    micro-conditioning time ids to the timestep embedding (``added_cond_kwargs``).
    """
    cond = {"encoder_hidden_states": hidden}
    if pooled is not None:
        cond["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}
    return cond


def cond_kwargs(cond) -> dict:
    """``unet_cond``'s dict as is; a bare tensor (or None) is SD 1.x hidden states."""
    return dict(cond) if isinstance(cond, dict) else {"encoder_hidden_states": cond}


def diffusion_loss(
    unet, scheduler, latents, caption_emb, gligen=None, generator=None, weights=None
):
    """MSE between the UNet's prediction and its target at drawn timesteps.

    ``caption_emb`` is the caption's conditioning (``unet_cond``, or SD 1.x hidden states).
    Timesteps are uniform, or drawn from ``weights`` (``timestep_weights``).
    ``gligen`` is ``{"boxes", "positive_embeddings", "masks"}`` for a gated UNet, None
    for a plain one. A fresh dict goes to the UNet on every call because diffusers pops
    the ``gligen`` entry out of ``cross_attention_kwargs``.
    """
    n = latents.shape[0]
    noise = torch.randn(
        latents.shape, generator=generator, device=latents.device, dtype=latents.dtype
    )
    if weights is None:
        t = torch.randint(
            0,
            scheduler.config.num_train_timesteps,
            (n,),
            generator=generator,
            device=latents.device,
            dtype=torch.long,
        )
    else:
        t = torch.multinomial(weights, n, replacement=True, generator=generator).to(latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    kwargs = {"gligen": dict(gligen)} if gligen is not None else None
    pred = unet(noisy, t, **cond_kwargs(caption_emb), cross_attention_kwargs=kwargs).sample
    return F.mse_loss(pred.float(), training_target(scheduler, latents, noise, t).float())


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 2.0) -> torch.Tensor:
    """Per-sample PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(peak**2 / mse)
