"""Encode a dataset once (VAE latents, caption and phrase embeddings) so training runs neither.

Adapter training updates a few percent of the UNet; running the VAE encoder and the
text encoder on every step costs more than that. ``encode_dataset`` fixes each image's
bucket and crop, stores the latent of the crop and of its mirror image (the VAE is not
flip-equivariant, so the flipped latent is encoded, not mirrored), every kept caption's
embedding, and one pooled embedding per *unique* phrase.

Layout of a cache directory::

    cache.json            format, fingerprint of inputs and params, complete flag
    plan.parquet          one row per sample: image, shard, slot, bucket, crop
    phrases.json/.npy     unique phrases and their pooled embeddings
    null_caption.npy      embedding of "" (caption drop)
    shards/shard-NNNNN/   latents, latents_flip, captions, caption_offsets,
                          boxes, mask, phrase_ids (.npy, memory-mapped when read)

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
from pipeline.core.errors import UserError
from pipeline.core.hashing import fingerprint, sha256_file, sha256_json
from pipeline.core.outputs import make_output_dir
from pipeline.core.progress import progress
from pipeline.core.resumable import open_job_dir
from trainer.buckets import assign_buckets, make_buckets
from trainer.data import Augment, common_fields, image_paths, load_pixels
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
        for sub in ("vae", "text_encoder")
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
    comps = load_components(
        model, gated=False, device=device or ("cuda" if torch.cuda.is_available() else "cpu")
    )
    resolution = int(resolution or comps.resolution)
    multiple = size_multiple(comps)
    comps.unet = None  # not needed here; frees its memory
    if resolution % multiple:
        raise UserError(f"resolution {resolution} is not a multiple of {multiple} for this model")
    layouts = layouts_from_records(ds.records, max_boxes)
    if not len(layouts):
        raise UserError(f"{ds.path} has no records to encode")
    paths = image_paths(ds, layouts)
    buckets = make_buckets(resolution, multiple)
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
    if not (out / "phrases.npy").is_file():
        _encode_texts(comps, layouts.phrases, out, np_dtype)
    null = np.load(out / "null_caption.npy")
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
                )
                _write_arrays(target, shard)
            else:
                bar.update(sel.size)
    bar.close()
    meta["complete"] = True
    atomic_write_text(out / META, json.dumps(meta, indent=2) + "\n")
    return out


def _encode_texts(comps, phrases, out: Path, np_dtype) -> None:
    """Pooled embeddings of the unique phrases, and the empty caption's embedding."""
    from trainer.model import encode_phrases, encode_prompts

    width = comps.text_encoder.config.hidden_size
    emb = [
        encode_phrases(comps, phrases[i : i + 256].tolist()).float().cpu().numpy()
        for i in range(0, len(phrases), 256)
    ] or [np.zeros((0, width))]
    atomic_write_text(out / "phrases.json", json.dumps(phrases.tolist()))
    with atomic_path(out / "phrases.npy") as tmp:
        np.save(tmp, np.concatenate(emb).astype(np_dtype))
    with atomic_path(out / "null_caption.npy") as tmp:
        np.save(tmp, encode_prompts(comps, [""])[0].float().cpu().numpy().astype(np_dtype))


def _encode_shard(
    comps, layouts, paths, cols, sel, batch_size, captions_per_image, np_dtype, null, pool, bar
) -> dict:
    """Latents (plain and mirrored) and caption embeddings of one shard's samples."""
    from trainer.model import encode_prompts, to_latents

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

    out = {"latents": [], "latents_flip": [], "captions": []}
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
            out["captions"].append(
                encode_prompts(comps, flat).float().cpu().numpy().astype(np_dtype)
            )
        bar.update(chunk.size)
    return {
        "latents": np.concatenate(out["latents"]),
        "latents_flip": np.concatenate(out["latents_flip"]),
        "captions": np.concatenate(out["captions"]) if out["captions"] else null[None],
        "caption_offsets": np.concatenate([[0], np.cumsum(n_caps)]).astype(np.int64),
    }


class CacheBatches:
    """Training batches read from a cache: the same fields as ``ImageBatches`` produces
    after encoding (``latents``, ``caption_emb``, ``phrase_emb``), no encoder needed."""

    def __init__(self, path: str | Path, augment: Augment | None = None):
        self.path = Path(path)
        if not is_cache(self.path):
            raise UserError(
                f"{self.path} is not an encoded cache (no {META}); run `groundset encode`"
            )
        self.meta = json.loads((self.path / META).read_text())
        if self.meta.get("format") != FORMAT or not self.meta.get("complete"):
            raise UserError(
                f"{self.path} is an unfinished or foreign cache; run `groundset encode` again"
            )
        plan = pq.read_table(self.path / "plan.parquet")
        self.plan = {k: plan.column(k).to_numpy(zero_copy_only=False) for k in plan.column_names}
        self.buckets = np.asarray(self.meta["buckets"], np.int64)
        self.bucket_of = self.plan["bucket"]
        self.phrase_emb = np.load(self.path / "phrases.npy")
        self.null_caption = np.load(self.path / "null_caption.npy")
        self.augment = augment or Augment()
        self._shards: dict = {}

    def __len__(self) -> int:
        return len(self.bucket_of)

    def __getstate__(self):  # memory maps are reopened in each worker process
        return {**self.__dict__, "_shards": {}}

    def shard(self, s: int) -> dict:
        if s not in self._shards:
            d = self.path / "shards" / f"shard-{s:05d}"
            self._shards[s] = {f.stem: np.load(f, mmap_mode="r") for f in d.glob("*.npy")}
        return self._shards[s]

    def __call__(self, idx: np.ndarray, rng: np.random.Generator) -> dict:
        shards, slots = self.plan["shard"][idx], self.plan["slot"][idx]
        parts = [self.shard(int(s)) for s in shards]
        boxes = np.stack([p["boxes"][j] for p, j in zip(parts, slots)])
        mask = np.stack([p["mask"][j] for p, j in zip(parts, slots)])
        pid = np.stack([p["phrase_ids"][j] for p, j in zip(parts, slots)])
        offsets = [p["caption_offsets"] for p in parts]
        n_caps = np.array([o[j + 1] - o[j] for o, j in zip(offsets, slots)])
        aug = self.augment(boxes, mask, n_caps, rng)
        latents = np.stack(
            [p["latents_flip" if f else "latents"][j] for p, j, f in zip(parts, slots, aug["flip"])]
        )
        captions = np.stack(
            [
                self.null_caption
                if aug["caption_dropped"][b]
                else p["captions"][o[j] + aug["caption_choice"][b]]
                for b, (p, o, j) in enumerate(zip(parts, offsets, slots))
            ]
        )
        phrase_emb = np.zeros((*pid.shape, self.phrase_emb.shape[1]), np.float32)
        phrase_emb[aug["mask"]] = self.phrase_emb[pid[aug["mask"]]]
        batch = common_fields(
            aug,
            self.plan["image_id"][idx],
            np.stack([self.plan["height"][idx], self.plan["width"][idx]], 1),
            np.stack([self.plan["top"][idx], self.plan["left"][idx]], 1),
        )
        batch.update(
            latents=torch.from_numpy(latents.astype(np.float32)),
            caption_emb=torch.from_numpy(captions.astype(np.float32)),
            phrase_emb=torch.from_numpy(phrase_emb),
        )
        return batch
