"""Training batches read from an encode cache (``trainer.cache``): no encoder runs.

A batch has the same fields as ``trainer.data.ImageBatches`` produces once encoded
(``latents``, ``caption_emb``, ``phrase_emb``), plus SDXL's ``pooled_emb`` and
``time_ids`` when the cache holds them. A dropped caption takes the cached null
caption's hidden states *and* its pooled embedding; a flipped sample takes the mirrored
crop's latents *and* its time ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from pipeline.core.errors import UserError
from trainer.cache import FORMAT, META, is_cache
from trainer.data import Augment, common_fields


class CacheBatches:
    """Training batches read from a cache (see the module doc), no encoder needed."""

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
        pooled = self.path / "null_pooled.npy"
        self.null_pooled = np.load(pooled) if pooled.is_file() else None
        self.arch = self.meta.get("arch", "sd1")
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

        def caption(key: str, null: np.ndarray) -> np.ndarray:
            return np.stack(
                [
                    null if aug["caption_dropped"][b] else p[key][o[j] + aug["caption_choice"][b]]
                    for b, (p, o, j) in enumerate(zip(parts, offsets, slots))
                ]
            )

        captions = caption("captions", self.null_caption)
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
        if self.null_pooled is not None:  # SDXL: pooled text and time ids of the crop drawn
            ids = np.stack(
                [
                    p["time_ids_flip" if f else "time_ids"][j]
                    for p, j, f in zip(parts, slots, aug["flip"])
                ]
            )
            batch.update(
                pooled_emb=torch.from_numpy(caption("pooled", self.null_pooled).astype(np.float32)),
                time_ids=torch.from_numpy(ids.astype(np.float32)),
            )
        return batch
