"""Dataset records to training batches: images, captions, grounding boxes and masks.

A batch is built from the batch index alone (``BatchOrder`` picks the images, a NumPy
generator seeded with ``(seed, index)`` picks crop, flip, caption and drops), so data
loader workers need no shared state and a resumed run sees the same data. Two sources
produce batches of the same shape: ``ImageBatches`` here decodes and crops images every
step, ``trainer.cache_batches.CacheBatches`` reads latents and embeddings encoded beforehand.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from pipeline.core.dataset import Dataset
from pipeline.core.defaults import CAPTION_DROP, GROUNDING_DROP, MAX_BOXES, MIN_BOX_AREA
from pipeline.core.errors import UserError
from trainer.arch import SD1, flipped_left, time_ids
from trainer.buckets import BatchOrder, assign_buckets, buckets_for
from trainer.layout import Layouts, cover_crop, crop_boxes, drop, flip_boxes, layouts_from_records

FLIP_P = 0.5


def image_paths(dataset: Dataset, layouts: Layouts) -> list[Path]:
    """Absolute image paths; a source without an images root is the user's mistake."""
    roots = {s: dataset.image_path(s, "") for s in set(layouts.sources.tolist())}
    missing = sorted(s for s, r in roots.items() if r is None)
    if missing:
        raise UserError(
            f"{dataset.path}: manifest has no images_root for source(s) {missing}; "
            "images are needed to train from a dataset (or give an encoded cache)"
        )
    return [roots[s] / f for s, f in zip(layouts.sources, layouts.files)]


def load_pixels(path: Path, resized: tuple, crop: tuple, flip: bool) -> np.ndarray:
    """One image as ``(3, h, w)`` float32 in [-1, 1]: resize to cover, crop, maybe mirror.

    Decoded by ``pipeline.core.images.load_image``, in displayed (EXIF-rotated) orientation,
    the orientation the records' boxes were drawn in.
    """
    from pipeline.core.images import ImageReject, load_image

    try:
        im = Image.fromarray(load_image(path)).resize(resized, Image.BICUBIC)
    except ImageReject as e:
        raise UserError(f"cannot read image {path}: {e}") from None
    left, top, w, h = crop
    im = im.crop((left, top, left + w, top + h))
    if flip:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    # contiguous CHW: a transposed (channels-last) array makes the VAE pick other kernels,
    # whose rounding on flat image regions moves latents by ~1e-4 between callers
    x = np.ascontiguousarray(np.asarray(im, np.float32).transpose(2, 0, 1)) / 127.5 - 1.0
    # The VAE was trained on [-1, 1]; [0, 1] input is the classic silent bug.
    assert x.min() >= -1.0 and x.max() <= 1.0, f"{path}: pixels outside [-1, 1]"
    return x


def read_weights(path: str | Path, image_ids: np.ndarray) -> np.ndarray:
    """Per-image sampling weights from a Parquet ``image_id -> weight`` table.

    Images the table does not name keep weight 1, so a table listing only the
    down-weighted images is enough.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"sampling weights file {p} does not exist")
    t = pq.read_table(p)
    if not {"image_id", "weight"} <= set(t.column_names):
        raise UserError(f"{p} needs columns image_id and weight, has {t.column_names}")
    table = dict(zip(t.column("image_id").to_pylist(), t.column("weight").to_pylist()))
    w = np.array([table.get(i, 1.0) for i in image_ids], np.float64)
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise UserError(f"{p}: weights must be finite, non-negative and not all zero")
    return w


class Augment:
    """Flip, caption choice and the classifier-free-guidance drops, shared by both sources."""

    def __init__(self, caption_drop=CAPTION_DROP, grounding_drop=GROUNDING_DROP, flip_p=FLIP_P):
        for name, p in (("caption drop", caption_drop), ("grounding drop", grounding_drop)):
            if not 0.0 <= p <= 1.0:
                raise UserError(f"{name} must be in [0, 1], got {p}")
        self.caption_drop, self.grounding_drop, self.flip_p = caption_drop, grounding_drop, flip_p

    def __call__(self, boxes, mask, n_captions, rng: np.random.Generator) -> dict:
        n = len(boxes)
        flip = rng.random(n) < self.flip_p
        boxes = flip_boxes(boxes, mask, flip)
        no_grounding = drop(n, self.grounding_drop, rng)
        mask = mask & ~no_grounding[:, None]
        boxes[~mask] = 0.0
        choice = np.floor(rng.random(n) * np.maximum(n_captions, 1)).astype(np.int64)
        no_caption = drop(n, self.caption_drop, rng) | (np.asarray(n_captions) == 0)
        return {
            "boxes": boxes,
            "mask": mask,
            "flip": flip,
            "caption_choice": choice,
            "caption_dropped": no_caption,
        }


def common_fields(aug: dict, ids, size_hw, crop_tl) -> dict:
    return {
        "image_ids": list(ids),
        "boxes": torch.from_numpy(aug["boxes"]),
        "masks": torch.from_numpy(aug["mask"].astype(np.float32)),
        "original_size": torch.as_tensor(np.asarray(size_hw, np.int64)),  # (B, 2) h, w
        "crop_top_left": torch.as_tensor(np.asarray(crop_tl, np.int64)),  # (B, 2) top, left
        "flip": torch.from_numpy(aug["flip"]),
        "caption_dropped": torch.from_numpy(aug["caption_dropped"]),
    }


class ImageBatches:
    """Batches decoded from the dataset's images every step (no cache needed).

    A batch carries ``pixels`` in [-1, 1], caption ``input_ids`` (and ``input_ids_2``
    for SDXL's second tokenizer), SDXL ``time_ids`` of the crop drawn, and the batch's
    unique ``phrases`` with ``phrase_index`` pointing each box at one of them (-1 = no
    box), so the training step can run the VAE and text encoders itself.
    """

    def __init__(
        self,
        dataset: Dataset,
        tokenizer,
        *,
        resolution: int,
        multiple: int,
        max_boxes: int = MAX_BOXES,
        min_area: float = MIN_BOX_AREA,
        augment: Augment | None = None,
        random_crop: bool = True,
        arch: str = SD1,
        tokenizer_2=None,
    ):
        self.layouts = layouts_from_records(dataset.records, max_boxes)
        if not len(self.layouts):
            raise UserError(f"{dataset.path} has no records to train on")
        self.paths = image_paths(dataset, self.layouts)
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        self.buckets = buckets_for(arch, resolution, multiple)
        self.bucket_of = assign_buckets(self.layouts.width, self.layouts.height, self.buckets)
        self.min_area, self.random_crop = min_area, random_crop
        self.augment = augment or Augment()

    def __len__(self) -> int:
        return len(self.layouts)

    def __call__(self, idx: np.ndarray, rng: np.random.Generator) -> dict:
        L = self.layouts
        bw, bh = self.buckets[self.bucket_of[idx[0]]]
        rw, rh, left, top = cover_crop(
            L.width[idx], L.height[idx], bw, bh, rng if self.random_crop else None
        )
        boxes, mask = crop_boxes(
            L.boxes[idx], L.mask[idx], rw, rh, left, top, bw, bh, self.min_area
        )
        n_caps = np.array([len(L.captions[i]) for i in idx])
        aug = self.augment(boxes, mask, n_caps, rng)
        pixels = np.stack(
            [
                load_pixels(
                    self.paths[i],
                    (int(rw[j]), int(rh[j])),
                    (int(left[j]), int(top[j]), int(bw), int(bh)),
                    bool(aug["flip"][j]),
                )
                for j, i in enumerate(idx)
            ]
        )
        captions = [
            "" if aug["caption_dropped"][j] else L.captions[i][aug["caption_choice"][j]]
            for j, i in enumerate(idx)
        ]
        pid = np.where(aug["mask"], L.phrase_ids[idx], -1)
        unique, inverse = np.unique(pid[aug["mask"]], return_inverse=True)
        phrase_index = np.full(pid.shape, -1, np.int64)
        phrase_index[aug["mask"]] = inverse
        batch = common_fields(
            aug,
            L.image_ids[idx],
            np.stack([L.height[idx], L.width[idx]], 1),
            np.stack([top, left], 1),
        )
        left_drawn = np.where(aug["flip"], flipped_left(rw, left, bw), left)
        ids = time_ids(
            np.stack([L.height[idx], L.width[idx]], 1), np.stack([top, left_drawn], 1), (bh, bw)
        )
        batch.update(
            pixels=torch.from_numpy(pixels),
            captions=captions,
            time_ids=torch.from_numpy(ids),
            input_ids=tokenize(self.tokenizer, captions),
            phrases=[str(p) for p in L.phrases[unique]],
            phrase_index=torch.from_numpy(phrase_index),
        )
        if self.tokenizer_2 is not None:
            batch["input_ids_2"] = tokenize(self.tokenizer_2, captions)
        return batch


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


class _IndexedBatches(torch.utils.data.Dataset):
    """Map global batch index -> batch, so DataLoader workers stay stateless."""

    def __init__(self, source, order: BatchOrder, seed: int):
        self.source, self.order, self.seed = source, order, seed

    def __getitem__(self, k: int) -> dict:
        batch = self.source(self.order.batch(k), np.random.default_rng([self.seed, 1, k]))
        batch["index"] = k
        return batch


def batches(
    source, order: BatchOrder, *, seed: int, start: int = 0, stride: int = 1, workers: int = 0
):
    """Iterate batches ``start, start + stride, ...`` forever, optionally in worker processes.

    ``stride`` and ``start`` shard the stream across processes of a multi-GPU run: each
    takes every ``world_size``-th batch, so together they see exactly the one-GPU order.
    """
    return iter(
        torch.utils.data.DataLoader(
            _IndexedBatches(source, order, seed),
            batch_size=None,
            sampler=itertools.count(start, stride),
            num_workers=workers,
            persistent_workers=workers > 0,
        )
    )
