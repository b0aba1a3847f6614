"""Layout-to-image generation with GLIGEN's scheduled sampling.

The loop mirrors diffusers' ``StableDiffusionGLIGENPipeline`` step for step (same
classifier-free guidance layout: unconditional half first, with its grounding masks
zeroed; same ``enable_fuser`` switch at ``int(beta * len(timesteps))``) so a groundset
sample equals the pipeline's own output for the same latents. What the pipeline lacks and
this adds: a different layout per batch item, per-image seeds (a resumed run redraws the
same images), DDIM or DPM-Solver, and a dataset directory of the requested layouts beside
the images so evaluation can score boxes against pictures.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pipeline import defaults
from pipeline.dataset import (
    atomic_write_text,
    input_entry,
    read_dataset,
    sha256_file,
    write_dataset,
)
from pipeline.errors import UserError
from pipeline.progress import progress
from pipeline.records import BOX, rejects_table
from trainer.diffusion import make_sampler
from trainer.model import (
    Components,
    encode_phrases,
    encode_prompts,
    from_latents,
    is_gated,
    load_adapters,
    load_components,
    resolve_model,
    set_fuser,
)

OVER_MAX_BOXES = "over_max_boxes"
STAGE = "sample"


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
    scheduler: str = "ddim",
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


# --------------------------------------------------------------------------- dataset stage


def select(records: pa.Table, split: str | None, limit: int | None) -> pa.Table:
    if split:
        records = records.filter(pc.equal(records.column("split"), split))
    return records.slice(0, limit) if limit is not None else records


def flat_layouts(records: pa.Table, max_objs: int) -> dict:
    """Per-box columns with owner image and slot, plus which boxes exceed ``max_objs``."""
    lengths = (
        pc.list_value_length(records.column("boxes")).fill_null(0).to_numpy(zero_copy_only=False)
    )
    flat = pc.list_flatten(records.column("boxes"))
    owner = np.repeat(np.arange(records.num_rows), lengths)
    starts = np.cumsum(lengths) - lengths
    slot = np.arange(len(owner)) - np.repeat(starts, lengths)
    xyxy = (
        np.stack([pc.struct_field(flat, f).to_numpy() for f in ("x0", "y0", "x1", "y1")], axis=1)
        if len(owner)
        else np.zeros((0, 4), np.float32)
    )
    phrases = np.asarray(pc.struct_field(flat, "phrase").fill_null("").to_pylist(), dtype=object)
    return {"owner": owner, "slot": slot, "xyxy": xyxy, "phrase": phrases, "over": slot >= max_objs}


def first_captions(records: pa.Table) -> list[str]:
    return [c[0] if c else "" for c in records.column("captions").to_pylist()]


def truncate_boxes(records: pa.Table, over: np.ndarray, max_objs: int) -> pa.Table:
    """Keep the first ``max_objs`` boxes of each record (the ones the model was asked for)."""
    boxes = records.column("boxes")
    lengths = pc.list_value_length(boxes).fill_null(0).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(boxes).combine_chunks().filter(pa.array(~over))
    offsets = np.concatenate([[0], np.cumsum(np.minimum(lengths, max_objs))]).astype(np.int32)
    new = pa.ListArray.from_arrays(pa.array(offsets), values)
    return records.set_column(records.schema.get_field_index("boxes"), "boxes", new)


def request_key(params: dict, layouts: Path, adapters: Path | None) -> str:
    """Fingerprint of what is being drawn; staged images from another request are discarded."""
    blob = json.dumps(
        {
            "params": params,
            "layouts": input_entry(layouts)["sha256"],
            "adapters": sha256_file(adapters) if adapters else None,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def sample_dataset(
    model: str | Path,
    layouts: str | Path,
    out: str | Path,
    *,
    adapters: str | Path | None = None,
    beta: float = defaults.SCHEDULED_SAMPLING_BETA,
    steps: int = defaults.NUM_INFERENCE_STEPS,
    guidance_scale: float = defaults.GUIDANCE_SCALE,
    scheduler: str = "ddim",
    seed: int = 0,
    limit: int | None = None,
    split: str | None = None,
    batch_size: int = 8,
    max_objs: int = defaults.MAX_BOXES,
    device=None,
    dtype=None,
) -> dict:
    """Draw one image per layout record; write them with their layouts as a dataset directory.

    Images are staged one file at a time beside ``out`` and kept across a killed run (a
    rerun with the same request skips them: each image depends only on its seed), then
    moved into ``out/images`` once the dataset directory is written.
    """
    if not 0.0 <= beta <= 1.0:
        raise UserError(f"--beta must be within [0, 1], got {beta}")
    if steps < 1 or batch_size < 1 or (limit is not None and limit < 0):
        raise UserError("--steps and --batch-size must be positive and --limit not negative")
    layouts, out = Path(layouts), Path(out)
    adapters = Path(adapters) if adapters else None
    model = resolve_model(model)  # a missing model is reported before any other work
    ds = read_dataset(layouts)
    records = select(ds.records, split, limit)
    comps = load_components(model, gated=True, device=device, dtype=dtype)
    adapter_cfg = load_adapters(comps.unet, adapters) if adapters else {}
    comps.unet.eval()
    params = {
        "model": str(model),
        "adapters": str(adapters) if adapters else None,
        "beta": beta,
        "steps": steps,
        "guidance_scale": guidance_scale,
        "scheduler": scheduler,
        "seed": seed,
        "limit": limit,
        "split": split,
        "max_objs": max_objs,
        "resolution": comps.resolution,
    }

    stage_dir = out.parent / f".{out.name}.images"
    key = request_key(params, layouts, adapters)
    key_file = stage_dir / ".request"
    if stage_dir.exists() and (not key_file.is_file() or key_file.read_text() != key):
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(key_file, key)

    lay = flat_layouts(records, max_objs)
    keep = ~lay["over"]
    captions = first_captions(records)
    names = [f"{i:06d}.png" for i in range(records.num_rows)]
    todo = np.array([not (stage_dir / n).is_file() for n in names], dtype=bool)
    bar = progress(total=int(todo.sum()), desc="sample", unit="img")
    for start in range(0, records.num_rows, batch_size):
        idx = np.arange(start, min(start + batch_size, records.num_rows))
        idx = idx[todo[idx]]
        if not len(idx):
            continue
        sel = keep & np.isin(lay["owner"], idx)
        pos = np.searchsorted(idx, lay["owner"][sel])
        gligen = grounding_tensors(
            comps,
            pos,
            lay["slot"][sel],
            lay["xyxy"][sel],
            lay["phrase"][sel].tolist(),
            len(idx),
            max_objs,
        )
        images, _ = generate(
            comps,
            [captions[i] for i in idx],
            gligen,
            [seed * 1_000_003 + int(i) for i in idx],
            beta=beta,
            steps=steps,
            guidance_scale=guidance_scale,
            scheduler=scheduler,
        )
        for i, img in zip(idx, images):
            write_png(stage_dir / names[i], img)
        bar.update(len(idx))
    bar.close()

    side = comps.resolution
    result = truncate_boxes(records, lay["over"], max_objs)
    result = result.set_column(
        result.schema.get_field_index("file"), "file", pa.array(names, pa.string())
    )
    for col in ("width", "height"):
        result = result.set_column(
            result.schema.get_field_index(col),
            col,
            pa.array(np.full(result.num_rows, side, np.int32)),
        )
    over = np.flatnonzero(lay["over"])
    ids, files = (
        records.column("image_id").to_numpy(zero_copy_only=False),
        np.asarray(names, dtype=object),
    )
    rejects = rejects_table(
        {
            "stage": [STAGE] * len(over),
            "source": records.column("source")
            .to_numpy(zero_copy_only=False)[lay["owner"][over]]
            .tolist(),
            "kind": [BOX] * len(over),
            "image_id": ids[lay["owner"][over]].tolist(),
            "file": files[lay["owner"][over]].tolist(),
            "box_index": lay["slot"][over].astype(np.int64).tolist(),
            "reason": [OVER_MAX_BOXES] * len(over),
            "detail": [f"the model takes at most {max_objs} boxes"] * len(over),
        }
    )
    images_root = str((out / "images").resolve())
    sources = {
        s: {"images_root": images_root} for s in pc.unique(result.column("source")).to_pylist()
    }
    inputs = [input_entry(layouts)] + ([input_entry(adapters)] if adapters else [])
    manifest = write_dataset(
        out,
        result,
        rejects,
        stage=STAGE,
        inputs=inputs,
        params=params,
        images_in=records.num_rows,
        boxes_in=len(lay["owner"]),
        sources=sources,
        extra={"generation": {"adapter_config": adapter_cfg, "image_size": [side, side]}},
    )
    key_file.unlink(missing_ok=True)
    os.replace(stage_dir, out / "images")
    return manifest


def write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)
