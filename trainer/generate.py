"""Layout-to-image generation with GLIGEN's scheduled sampling.

The loop mirrors diffusers' ``StableDiffusionGLIGENPipeline`` step for step (same
classifier-free guidance layout: unconditional half first, with its grounding masks
zeroed; same ``enable_fuser`` switch at ``int(beta * len(timesteps))``), so a groundset
sample equals the pipeline's own output for the same latents. What the pipeline lacks and
this adds: a different layout per batch item, per-image seeds, and DDIM or DPM-Solver.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from pipeline.core import defaults
from pipeline.core.progress import progress
from trainer.diffusion import make_sampler
from trainer.model import (
    Components,
    encode_phrases,
    encode_prompts,
    from_latents,
    is_gated,
    set_fuser,
)


def grounding_tensors(
    comps: Components,
    owner: np.ndarray,
    slot: np.ndarray,
    boxes: np.ndarray,
    phrases: list[str],
    n: int,
    max_objs: int = defaults.MAX_BOXES,
) -> dict:
    """Pad flat per-box columns into the UNet's ``gligen`` kwargs (boxes, positive_embeddings, masks).

    Each distinct phrase is encoded once; boxes land at ``[owner, slot]`` by one scatter.
    """
    te = comps.text_encoder
    out_boxes = torch.zeros(n, max_objs, 4, device=te.device, dtype=te.dtype)
    embeds = torch.zeros(
        n, max_objs, comps.unet.config.cross_attention_dim, device=te.device, dtype=te.dtype
    )
    masks = torch.zeros(n, max_objs, device=te.device, dtype=te.dtype)
    if len(owner):
        uniq, inverse = np.unique(
            np.asarray(phrases, dtype=object).astype(str), return_inverse=True
        )
        table = encode_phrases(comps, uniq.tolist())
        o, s = torch.as_tensor(owner, device=te.device), torch.as_tensor(slot, device=te.device)
        out_boxes[o, s] = torch.as_tensor(
            np.asarray(boxes, np.float32), device=te.device, dtype=te.dtype
        )
        embeds[o, s] = table[torch.as_tensor(inverse.reshape(-1), device=te.device)]
        masks[o, s] = 1
    return {"boxes": out_boxes, "positive_embeddings": embeds, "masks": masks}


def initial_noise(comps: Components, seeds: list[int]) -> torch.Tensor:
    """One CPU generator per image, so an image depends on its seed only (not batch or device)."""
    size = int(comps.unet.config.sample_size)
    shape = (1, comps.unet.config.in_channels, size, size)
    noise = [
        torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds
    ]
    return torch.cat(noise).to(comps.device, comps.unet.dtype)


@torch.no_grad()
def denoise(
    unet,
    sampler,
    latents: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    gligen: dict | None,
    *,
    steps: int,
    guidance_scale: float,
    beta: float,
    eta: float = 0.0,
    generator=None,
    show: bool = False,
) -> torch.Tensor:
    """The GLIGEN pipeline's denoising loop; gated layers run only for the first ``beta`` of steps.

    ``unet`` is anything called like diffusers' UNet (tests pass an oracle). Fusers are
    switched back on afterwards so a training loop that samples mid-run is unaffected.
    """
    sampler.set_timesteps(steps, device=latents.device)
    timesteps = sampler.timesteps
    cfg = guidance_scale > 1.0
    embeds = torch.cat([uncond, cond]) if cfg else cond
    kwargs = None
    if gligen is not None:
        g = dict(gligen)
        if cfg:
            g = {k: torch.cat([v, v]) for k, v in g.items()}
            g["masks"][: len(latents)] = 0  # the unconditional half sees only null grounding tokens
        kwargs = {"gligen": g}
    step_args = inspect.signature(sampler.step).parameters
    extra = {k: v for k, v in (("eta", eta), ("generator", generator)) if k in step_args}
    n_grounding = int(beta * len(timesteps))
    latents = latents * sampler.init_noise_sigma
    try:
        set_fuser(unet, True)
        for i, t in enumerate(progress(timesteps, desc="denoise", leave=False, disable=not show)):
            if i == n_grounding:
                set_fuser(unet, False)
            x = torch.cat([latents] * 2) if cfg else latents
            x = sampler.scale_model_input(x, t)
            pred = unet(x, t, encoder_hidden_states=embeds, cross_attention_kwargs=kwargs).sample
            if cfg:
                pred_uncond, pred_text = pred.chunk(2)
                pred = pred_uncond + guidance_scale * (pred_text - pred_uncond)
            latents = sampler.step(pred, t, latents, **extra).prev_sample
    finally:
        set_fuser(unet, True)
    return latents


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW to uint8 NHWC, rounded as diffusers' image processor does."""
    x = (images.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return (x * 255).round().astype(np.uint8)


@torch.no_grad()
def generate(
    comps: Components,
    captions: list[str],
    gligen: dict | None,
    seeds: list[int],
    *,
    beta: float = defaults.SCHEDULED_SAMPLING_BETA,
    steps: int = defaults.NUM_INFERENCE_STEPS,
    guidance_scale: float = defaults.GUIDANCE_SCALE,
    scheduler: str = defaults.SAMPLER,
    eta: float = 0.0,
    latents: torch.Tensor | None = None,
) -> tuple[np.ndarray, torch.Tensor]:
    """Images (uint8 NHWC) and final latents for one batch of captions and layouts.

    A base (non-gated) UNet ignores ``gligen``: it is the reference a ``beta=0`` run must equal.
    """
    sampler = make_sampler(comps.scheduler, scheduler)
    if latents is None:
        latents = initial_noise(comps, seeds)
    cond = encode_prompts(comps, captions).to(comps.unet.dtype)
    uncond = (
        encode_prompts(comps, [""] * len(captions)).to(comps.unet.dtype)
        if guidance_scale > 1.0
        else None
    )
    if gligen is not None:
        gligen = (
            {k: v.to(comps.device, comps.unet.dtype) for k, v in gligen.items()}
            if is_gated(comps.unet)
            else None
        )
    out = denoise(
        comps.unet,
        sampler,
        latents,
        cond,
        uncond,
        gligen,
        steps=steps,
        guidance_scale=guidance_scale,
        beta=beta,
        eta=eta,
    )
    return to_uint8(from_latents(comps, out)), out
