"""Encode a dataset once (VAE latents, caption and phrase embeddings) so training runs neither.

Adapter training updates a few percent of the UNet; running the VAE encoder and the
text encoders on every step costs more than that. ``encode_dataset`` fixes each image's
bucket and crop, stores the latent of the crop and of its mirror image (the VAE is not
flip-equivariant, so the flipped latent is encoded, not mirrored) with the SDXL time ids
of each (original size, crop top-left, target size: the mirror's crop is mirrored too),
every kept caption's conditioning (hidden states, and SDXL's pooled embedding), and one
embedding per *unique* phrase (``trainer.text``). The model family decides the buckets
(``trainer.buckets.buckets_for``) and the encoders; a training run reads no encoder.

Layout of a cache directory::

    cache.json            format, arch, fingerprint of inputs and params, complete flag
    plan.parquet          one row per sample: image, shard, slot, bucket, crop
    phrases.json/.npy     unique phrases and their embeddings
    null_caption.npy      the dropped caption's hidden states (caption drop)
    null_pooled.npy       SDXL: the dropped caption's pooled embedding (dropped with it)
    shards/shard-NNNNN/   latents, latents_flip, time_ids, time_ids_flip, captions,
                          [pooled,] caption_offsets, boxes, mask, phrase_ids (.npy,
                          memory-mapped when read)

Each shard is written under a temporary name and renamed, so a killed ``encode`` run
started again skips finished shards and redoes only the one it was in.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.core import defaults as D
from pipeline.core.atomic import atomic_output_dir, atomic_path, atomic_write_text
from pipeline.core.dataset import read_dataset
from pipeline.core.device import AUTO, resolve_device
from pipeline.core.errors import UserError
from pipeline.core.hashing import fingerprint, sha256_file, sha256_json
from pipeline.core.outputs import make_output_dir
from pipeline.core.progress import progress
from pipeline.core.resumable import open_job_dir
from trainer.arch import time_ids
from trainer.buckets import assign_buckets, buckets_for
from trainer.data import image_paths, load_pixels
from trainer.layout import cover_crop, crop_boxes, layouts_from_records

FORMAT = "groundset-encode-cache"
VERSION = 1
META = "cache.json"
KIND = "encode"  # the output kind of a cache folder (pipeline.core.outputs)
DTYPES = {name: getattr(np, name) for name in D.CACHE_DTYPES}


def is_cache(path: str | Path) -> bool:
    return (Path(path) / META).is_file()


def encoders_fingerprint(model_path: str | Path) -> str:
    """Hash of the VAE and text encoder files: a cache is valid for any model sharing them
    (a base model fine-tuned with ``--mode base`` keeps them, so its cache still fits)."""
    root = Path(model_path)
    files = [
        f"{sub}/{f.name}"
        for sub in ("vae", "text_encoder", "text_encoder_2")
        if (root / sub).is_dir()
        for f in (root / sub).iterdir()
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json")
    ]
    return fingerprint(root, files=files)


def size_multiple(comps) -> int:
    """Image sides must divide by the VAE's and the UNet's joint downsampling."""
    return comps.vae_scale_factor * 2 ** (len(comps.unet.config.block_out_channels) - 1)


def _plan(layouts, buckets, seed, shard_size) -> pa.Table:
    """Bucket, crop, shard and slot of every sample: shards never mix buckets."""
    bucket = assign_buckets(layouts.width, layouts.height, buckets)
    rw, rh, left, top = cover_crop(
        layouts.width,
        layouts.height,
        buckets[bucket, 0],
        buckets[bucket, 1],
        np.random.default_rng([seed, 2]),
    )
    order = np.lexsort((np.arange(bucket.size), bucket))
    b_sorted = bucket[order]
    rank = np.arange(order.size) - np.searchsorted(b_sorted, b_sorted, side="left")
    new_shard = rank % shard_size == 0
    shard = np.cumsum(new_shard) - 1
    slot = rank % shard_size
    return pa.table(
        {
            "image_id": layouts.image_ids[order].tolist(),
            "row": order,
            "shard": shard,
            "slot": slot,
            "bucket": b_sorted,
            "bucket_w": buckets[b_sorted, 0],
            "bucket_h": buckets[b_sorted, 1],
            "resized_w": rw[order],
            "resized_h": rh[order],
            "left": left[order],
            "top": top[order],
            "width": layouts.width[order],
            "height": layouts.height[order],
        }
    )


def _write_arrays(target: Path, arrays: dict) -> None:
    with atomic_output_dir(target) as tmp:
        for name, a in arrays.items():
            np.save(tmp / f"{name}.npy", a)


@torch.no_grad()
def encode_dataset(
    data: str | Path,
    model: str | Path,
    out: str | Path,
    *,
    resolution=None,
    shard_size: int = D.CACHE_SHARD_SIZE,
    batch_size: int = D.ENCODE_BATCH_SIZE,
    captions_per_image: int = D.CACHE_CAPTIONS,
    dtype: str = D.CACHE_DTYPE,
    max_boxes: int = D.MAX_BOXES,
    min_area: float = D.MIN_BOX_AREA,
    seed: int = D.SEED,
    device=None,
) -> Path:
    """Write (or finish) the cache of ``data`` for ``model`` at ``out``; returns ``out``."""
    from trainer.model import load_components

    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype}")
    ds = read_dataset(data)
    comps = load_components(model, gated=False, device=device or resolve_device(AUTO))
    resolution = int(resolution or comps.resolution)
    multiple = size_multiple(comps)
    comps.unet = None  # not needed here; frees its memory
    if resolution % multiple:
        raise UserError(f"resolution {resolution} is not a multiple of {multiple} for this model")
    layouts = layouts_from_records(ds.records, max_boxes)
    if not len(layouts):
        raise UserError(f"{ds.path} has no records to encode")
    paths = image_paths(ds, layouts)
    buckets = buckets_for(comps.arch, resolution, multiple)
    params = {
        "resolution": resolution,
        "shard_size": shard_size,
        "captions_per_image": captions_per_image,
        "dtype": dtype,
        "max_boxes": max_boxes,
        "min_area": min_area,
        "seed": seed,
    }
    encoders = encoders_fingerprint(comps.path)
    job = sha256_json([sha256_file(ds.path / "manifest.json"), encoders, params])
    out = Path(out)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "arch": comps.arch,
        "dataset": str(ds.path),
        "model": str(comps.path),
        "params": params,
        "fingerprint": job,
        "encoders_sha256": encoders,
        "buckets": buckets.tolist(),
        "scaling_factor": comps.vae.config.scaling_factor if comps.vae is not None else None,
        "n_samples": len(layouts),
        "complete": False,
    }
    make_output_dir(out, KIND)
    open_job_dir(out, {"fingerprint": job}, other_job="refuse")
    if is_cache(out) and json.loads((out / META).read_text()).get("complete"):
        return out
    (out / "shards").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / META, json.dumps(meta, indent=2) + "\n")

    plan = _plan(layouts, buckets, seed, shard_size)
    with atomic_path(out / "plan.parquet") as tmp:
        pq.write_table(plan, tmp)
    np_dtype = DTYPES[dtype]
    if not (out / "null_caption.npy").is_file():
        _encode_texts(comps, layouts.phrases, out, np_dtype)
    null = {"captions": np.load(out / "null_caption.npy")}
    if (out / "null_pooled.npy").is_file():
        null["pooled"] = np.load(out / "null_pooled.npy")
    cols = {k: plan.column(k).to_numpy() for k in plan.column_names if k != "image_id"}
    bar = progress(total=len(layouts), desc="encode", unit="img")
    # PIL releases the GIL while decoding and resizing, so threads overlap image reads
    # with the encoders
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for s in range(int(cols["shard"].max()) + 1):
            sel = np.flatnonzero(cols["shard"] == s)
            target = out / "shards" / f"shard-{s:05d}"
            if not target.is_dir():
                shard = _encode_shard(
                    comps,
                    layouts,
                    paths,
                    cols,
                    sel,
                    batch_size,
                    captions_per_image,
                    np_dtype,
                    null,
                    pool,
                    bar,
                )
                boxes, mask = crop_boxes(
                    layouts.boxes[cols["row"][sel]],
                    layouts.mask[cols["row"][sel]],
                    *(
                        cols[k][sel]
                        for k in ("resized_w", "resized_h", "left", "top", "bucket_w", "bucket_h")
                    ),
                    min_area,
                )
                shard.update(
                    boxes=boxes,
                    mask=mask,
                    phrase_ids=np.where(mask, layouts.phrase_ids[cols["row"][sel]], -1),
                    **shard_time_ids(cols, sel),
                )
                _write_arrays(target, shard)
            else:
                bar.update(sel.size)
    bar.close()
    meta["complete"] = True
    atomic_write_text(out / META, json.dumps(meta, indent=2) + "\n")
    return out


def shard_time_ids(cols: dict, sel: np.ndarray) -> dict:
    """SDXL time ids of each sample's crop and of its mirror (``trainer.arch``)."""
    from trainer.arch import flipped_left

    pick = lambda k: cols[k][sel]
    original = np.stack([pick("height"), pick("width")], 1)
    target = np.stack([pick("bucket_h"), pick("bucket_w")], 1)
    mirrored = flipped_left(pick("resized_w"), pick("left"), pick("bucket_w"))
    return {
        "time_ids": time_ids(original, np.stack([pick("top"), pick("left")], 1), target),
        "time_ids_flip": time_ids(original, np.stack([pick("top"), mirrored], 1), target),
    }


def _encode_texts(comps, phrases, out: Path, np_dtype) -> None:
    """Embeddings of the unique phrases, and the dropped caption's conditioning."""
    from trainer.text import encode_phrases, null_captions

    emb = [
        encode_phrases(comps, phrases[i : i + 256].tolist()).float().cpu().numpy()
        for i in range(0, len(phrases), 256)
    ] or [encode_phrases(comps, []).float().cpu().numpy()]
    atomic_write_text(out / "phrases.json", json.dumps(phrases.tolist()))
    with atomic_path(out / "phrases.npy") as tmp:
        np.save(tmp, np.concatenate(emb).astype(np_dtype))
    hidden, pooled = null_captions(comps, 1)
    if pooled is not None:
        with atomic_path(out / "null_pooled.npy") as tmp:
            np.save(tmp, pooled[0].float().cpu().numpy().astype(np_dtype))
    with atomic_path(out / "null_caption.npy") as tmp:  # written last: marks the texts done
        np.save(tmp, hidden[0].float().cpu().numpy().astype(np_dtype))


def _encode_shard(
    comps, layouts, paths, cols, sel, batch_size, captions_per_image, np_dtype, null, pool, bar
) -> dict:
    """Latents (plain and mirrored) and caption conditioning of one shard's samples."""
    from trainer.model import to_latents
    from trainer.text import encode_captions

    def pixels(r, c):
        return load_pixels(
            paths[r],
            (int(cols["resized_w"][c]), int(cols["resized_h"][c])),
            (
                int(cols["left"][c]),
                int(cols["top"][c]),
                int(cols["bucket_w"][c]),
                int(cols["bucket_h"][c]),
            ),
            False,
        )

    out = {"latents": [], "latents_flip": [], "captions": [], "pooled": []}
    n_caps = []
    for chunk in np.array_split(sel, max(1, -(-sel.size // batch_size))):
        rows = cols["row"][chunk]
        px = np.stack(list(pool.map(pixels, rows, chunk)))
        # the mirror of the crop is the crop of the mirror: decode each image once
        for key, x in (("latents", px), ("latents_flip", px[..., ::-1].copy())):
            z = to_latents(comps, torch.from_numpy(x), sample=False)
            out[key].append(z.float().cpu().numpy().astype(np_dtype))
        caps = [layouts.captions[r][: captions_per_image or None] for r in rows]
        n_caps += [len(c) for c in caps]
        flat = [c for cs in caps for c in cs]
        if flat:
            hidden, pooled = encode_captions(comps, flat)
            out["captions"].append(hidden.float().cpu().numpy().astype(np_dtype))
            if pooled is not None:
                out["pooled"].append(pooled.float().cpu().numpy().astype(np_dtype))
        bar.update(chunk.size)
    arrays = {
        "latents": np.concatenate(out["latents"]),
        "latents_flip": np.concatenate(out["latents_flip"]),
        "caption_offsets": np.concatenate([[0], np.cumsum(n_caps)]).astype(np.int64),
    }
    for key, parts in (("captions", out["captions"]), ("pooled", out["pooled"])):
        if key in null:  # a shard without any caption still holds one (never read) row
            arrays[key] = np.concatenate(parts) if parts else null[key][None]
    return arrays
