"""Layout-to-image generation with GLIGEN's scheduled sampling.

The loop mirrors diffusers' ``StableDiffusionGLIGENPipeline`` step for step (same
classifier-free guidance layout: unconditional half first, with its grounding masks
zeroed; same ``enable_fuser`` switch at ``int(beta * len(timesteps))``), so a groundset
sample equals the pipeline's own output for the same latents. What the pipeline lacks and
this adds: a different layout per batch item, per-image seeds, and DDIM or DPM-Solver.

SDXL runs the same loop with its extra conditioning (pooled embedding and time ids:
original size, crop top-left, target size, as ``StableDiffusionXLPipeline``) and, with a
refiner, as diffusers' "ensemble of experts": the base model denoises the timesteps
above ``1 - refiner_start`` of the schedule, the refiner (no adapters) the rest, exactly
the split of ``denoising_end`` / ``denoising_start``.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from pipeline.core import defaults
from pipeline.core.progress import progress
from trainer.arch import AESTHETIC_SCORE, NEGATIVE_AESTHETIC_SCORE, SD1, time_id_count, time_ids
from trainer.diffusion import make_sampler
from trainer.model import Components, encode_phrases, from_latents, is_gated, set_fuser
from trainer.objective import cond_kwargs, unet_cond
from trainer.text import encode_captions, null_captions


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


def image_size(comps: Components, size=None) -> tuple[int, int]:
    """``(height, width)`` in pixels: ``size`` if given, else the UNet's own square side."""
    if size is None:
        return comps.resolution, comps.resolution
    h, w = (int(v) for v in size)
    return h, w


def initial_noise(comps: Components, seeds: list[int], size=None) -> torch.Tensor:
    """One CPU generator per image, so an image depends on its seed only (not batch or device)."""
    h, w = image_size(comps, size)
    f = comps.vae_scale_factor
    shape = (1, comps.unet.config.in_channels, h // f, w // f)
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
    start: int = 0,
    stop: int | None = None,
) -> torch.Tensor:
    """The GLIGEN pipeline's denoising loop; gated layers run only for the first ``beta`` of steps.

    ``cond``/``uncond`` are SD 1.x hidden states or ``unet_cond`` dicts (SDXL). Only the
    timesteps ``[start:stop]`` of the ``steps``-step schedule are run (the base and the
    refiner's shares of an ensemble); ``beta`` is a share of the whole schedule.
    ``unet`` is anything called like diffusers' UNet (tests pass an oracle). Fusers are
    switched back on afterwards so a training loop that samples mid-run is unaffected.
    """
    sampler.set_timesteps(steps, device=latents.device)
    timesteps = sampler.timesteps
    cfg = guidance_scale > 1.0
    embeds = _cat(uncond, cond) if cfg else cond
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
    if start == 0:
        latents = latents * sampler.init_noise_sigma
    elif hasattr(sampler, "set_begin_index"):  # a multistep solver starting mid-schedule
        sampler.set_begin_index(start)
    run = list(enumerate(timesteps))[start:stop]
    try:
        set_fuser(unet, n_grounding > start)
        for i, t in progress(run, desc="denoise", leave=False, disable=not show):
            if i == n_grounding:
                set_fuser(unet, False)
            x = torch.cat([latents] * 2) if cfg else latents
            x = sampler.scale_model_input(x, t)
            pred = unet(x, t, **cond_kwargs(embeds), cross_attention_kwargs=kwargs).sample
            if cfg:
                pred_uncond, pred_text = pred.chunk(2)
                pred = pred_uncond + guidance_scale * (pred_text - pred_uncond)
            latents = sampler.step(pred, t, latents, **extra).prev_sample
    finally:
        set_fuser(unet, True)
    return latents


def _cat(a, b):
    """Unconditional and conditional halves side by side, tensors or nested dicts alike."""
    if isinstance(a, dict):
        return {k: _cat(a[k], b[k]) for k in a}
    return torch.cat([a, b])


def split_step(sampler, steps: int, refiner_start: float) -> int:
    """Index of the first timestep the refiner denoises (diffusers' ``denoising_start``).

    The base keeps the timesteps at or above ``round(T * (1 - refiner_start))``, the
    refiner takes the ones below, as ``StableDiffusionXLPipeline(denoising_end=...)``
    followed by ``StableDiffusionXLImg2ImgPipeline(denoising_start=...)`` do.
    """
    sampler.set_timesteps(steps)
    cutoff = round(sampler.config.num_train_timesteps * (1 - refiner_start))
    return int((sampler.timesteps >= cutoff).sum())


def conditioning(comps: Components, captions: list[str], cfg: bool, size, original, crop):
    """(cond, uncond) for the UNet: SD 1.x hidden states, or SDXL ``unet_cond`` dicts.

    SDXL's time ids are the same for both halves (diffusers' default when no negative
    sizes are given); the refiner's carry an aesthetic score instead of the target size,
    6.0 for the prompt and 2.5 for the negative, diffusers' img2img defaults.
    """
    dtype, n = comps.unet.dtype, len(captions)
    hidden, pooled = encode_captions(comps, captions)
    null = null_captions(comps, n) if cfg else (None, None)
    if comps.arch == SD1:
        return hidden.to(dtype), None if null[0] is None else null[0].to(dtype)
    h, w = image_size(comps, size)
    orig = (h, w) if original is None else tuple(original)
    if time_id_count(comps.unet.config, pooled.shape[-1]) == 5:
        ids = time_ids([orig] * n, crop, None, AESTHETIC_SCORE)
        neg = time_ids([orig] * n, crop, None, NEGATIVE_AESTHETIC_SCORE)
    else:
        ids = neg = time_ids([orig] * n, crop, (h, w))
    as_t = lambda a: torch.as_tensor(a, device=comps.device, dtype=dtype)
    cond = unet_cond(hidden.to(dtype), pooled.to(dtype), as_t(ids))
    uncond = unet_cond(null[0].to(dtype), null[1].to(dtype), as_t(neg)) if cfg else None
    return cond, uncond


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
    size: tuple[int, int] | None = None,
    original_size: tuple[int, int] | None = None,
    crop: tuple[int, int] = (0, 0),
    refiner: Components | None = None,
    refiner_start: float = defaults.REFINER_START,
) -> tuple[np.ndarray, torch.Tensor]:
    """Images (uint8 NHWC) and final latents for one batch of captions and layouts.

    A base (non-gated) UNet ignores ``gligen``: it is the reference a ``beta=0`` run must
    equal. ``size``, ``original_size`` and ``crop`` are ``(height, width)`` /
    ``(top, left)`` pixels; SDXL's defaults are the UNet's own square, original = size
    and crop (0, 0) (a centred, uncropped object). ``refiner`` (an SDXL refiner's
    components, no adapters) denoises the last ``1 - refiner_start`` of the schedule.
    """
    sampler = make_sampler(comps.scheduler, scheduler)
    if latents is None:
        latents = initial_noise(comps, seeds, size)
    cfg = guidance_scale > 1.0
    cond, uncond = conditioning(comps, captions, cfg, size, original_size, crop)
    if gligen is not None:
        gligen = (
            {k: v.to(comps.device, comps.unet.dtype) for k, v in gligen.items()}
            if is_gated(comps.unet)
            else None
        )
    split = split_step(sampler, steps, refiner_start) if refiner is not None else None
    common = {"steps": steps, "guidance_scale": guidance_scale, "eta": eta}
    out = denoise(
        comps.unet, sampler, latents, cond, uncond, gligen, beta=beta, stop=split, **common
    )
    if refiner is not None:
        ref_cond, ref_uncond = conditioning(refiner, captions, cfg, size, original_size, crop)
        out = denoise(
            refiner.unet,
            make_sampler(refiner.scheduler, scheduler),
            out.to(refiner.device, refiner.unet.dtype),
            ref_cond,
            ref_uncond,
            None,
            beta=0.0,
            start=split,
            **common,
        )
    return to_uint8(from_latents(comps, out.to(comps.device))), out
