"""A sensitive learning signal: held-out denoising loss with the true layout against others.

A tiny model on a CPU can learn *some* grounding long before the objects it draws
land in their boxes often enough to move a detector's AP. So the demo also measures
the adapters directly. It noises held-out images with fixed noise at fixed timesteps
and compares the UNet's denoising error in three conditions with the same weights,
noise and captions:

- ``off``: gated layers off (the base model);
- ``on``: gated layers on, each image with its own layout;
- ``shuffled``: gated layers on, each image with another image's layout.

``off - on`` mixes two things: the gated layers' dense branch lowers the loss without
reading any box. ``shuffled - on`` (``layout_gap``) is what the boxes themselves are
worth, so only it shows that the adapters learned *where* things are. This is GLIGEN's
own training objective, evaluated on layouts it never saw.
"""

from __future__ import annotations

import json

import numpy as np

from pipeline.core import defaults as D
from pipeline.core.atomic import atomic_write_text
from pipeline.core.dataset import dataset_input_paths, read_dataset
from pipeline.core.errors import UserError
from pipeline.core.images import read_rgb
from pipeline.core.outputs import claim_output


def _pixels(paths, size: int):
    import torch
    from PIL import Image

    arrays = []
    for p in paths:
        im = Image.fromarray(read_rgb(p)).resize((size, size), Image.BICUBIC)
        arrays.append(np.asarray(im, np.float32).transpose(2, 0, 1) / 127.5 - 1.0)
    return torch.from_numpy(np.stack(arrays))


def denoise_gap(
    model,
    adapters,
    layouts,
    out,
    *,
    timesteps=D.DENOISE_GAP_TIMESTEPS,
    limit=D.DENOISE_GAP_LIMIT,
    seed=D.SEED,
    batch_size=16,
    overwrite: bool = False,
) -> dict:
    """Write ``out`` (JSON metrics) and return them; see the module docstring."""
    import torch

    with claim_output(
        out,
        kind="denoise-gap",
        inputs=[model, adapters, *dataset_input_paths(layouts)],
        overwrite=overwrite,
        is_file=True,
    ):
        from trainer.arch import time_ids
        from trainer.layout import layouts_from_records
        from trainer.model import (
            encode_captions,
            encode_phrases,
            load_adapters,
            load_components,
            set_fuser,
            to_latents,
        )
        from trainer.objective import training_target, unet_cond

        ds = read_dataset(layouts)
        records = ds.records.slice(0, limit)
        if records.num_rows == 0:
            raise UserError(f"{layouts} holds no records to measure on")
        lay = layouts_from_records(records)
        comps = load_components(model, gated=True)
        load_adapters(comps.unet, adapters)
        comps.unet.eval()
        size = comps.resolution
        paths = [ds.image_path(s, f) for s, f in zip(lay.sources, lay.files)]
        if any(p is None for p in paths):
            raise UserError(f"{layouts}: the manifest has no images root for its sources")
        phrase_emb = encode_phrases(comps, [str(p) for p in lay.phrases]).float()
        gen = torch.Generator().manual_seed(seed)
        n = records.num_rows
        idx = torch.from_numpy(lay.phrase_ids)
        pe = torch.zeros(*idx.shape, phrase_emb.shape[-1])
        pe[idx >= 0] = phrase_emb[idx[idx >= 0]]
        layout = {
            "boxes": torch.from_numpy(lay.boxes),
            "masks": torch.from_numpy(lay.mask).float(),
            "positive_embeddings": pe,
        }
        other = torch.roll(torch.arange(n), 1)  # every image gets its neighbour's layout
        conditions = (("on", True, None), ("off", False, None), ("shuffled", True, other))
        sums = {t: {c[0]: 0.0 for c in conditions} for t in timesteps}
        with torch.no_grad():
            for start in range(0, n, batch_size):
                sl = slice(start, min(start + batch_size, n))
                x0 = to_latents(comps, _pixels(paths[sl], size), sample=False).float()
                caps = [c[0] if c else "" for c in lay.captions[sl]]
                hidden, pooled = encode_captions(comps, caps)
                # SDXL: the images are resized whole to the square, so the time ids say so
                ids = time_ids(np.stack([lay.height[sl], lay.width[sl]], 1), (0, 0), (size, size))
                cond = unet_cond(
                    hidden.float(),
                    None if pooled is None else pooled.float(),
                    torch.from_numpy(ids),
                )
                for t in timesteps:
                    noise = torch.randn(x0.shape, generator=gen)
                    tt = torch.full((x0.shape[0],), t, dtype=torch.long)
                    noisy = comps.scheduler.add_noise(x0, noise, tt)
                    target = training_target(comps.scheduler, x0, noise, tt)
                    for key, on, perm in conditions:
                        rows = torch.arange(n)[sl] if perm is None else perm[sl]
                        set_fuser(comps.unet, on)
                        pred = comps.unet(
                            noisy,
                            tt,
                            **cond,
                            cross_attention_kwargs={
                                "gligen": {k: v[rows] for k, v in layout.items()}
                            },
                        ).sample
                        sums[t][key] += float(((pred.float() - target) ** 2).mean()) * x0.shape[0]
        set_fuser(comps.unet, True)
        per_t = {}
        for t in timesteps:
            on, off, shuffled = (sums[t][k] / n for k in ("on", "off", "shuffled"))
            per_t[str(t)] = {
                "loss_gates_on": on,
                "loss_gates_off": off,
                "loss_shuffled_layout": shuffled,
                "gap": off - on,
                "relative_gap": (off - on) / off if off > 0 else 0.0,
                "layout_gap": (shuffled - on) / shuffled if shuffled > 0 else 0.0,
            }
        result = {
            "n_images": n,
            "timesteps": per_t,
            "mean_relative_gap": float(np.mean([v["relative_gap"] for v in per_t.values()])),
            "mean_layout_gap": float(np.mean([v["layout_gap"] for v in per_t.values()])),
            "adapters": str(adapters),
            "layouts": str(layouts),
        }
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        return result
