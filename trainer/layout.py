"""Grounding layouts as fixed-size arrays, and the box arithmetic of augmentation.

GLIGEN feeds the UNet at most 30 grounding tokens per image, padded and masked, so every
record's ragged box list becomes a row of an ``(N, max_boxes, 4)`` array once, up front.
Crop, flip and drop then work on whole batches of those arrays (no loop per box), and
the same functions serve images decoded every step and latents read from the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.defaults import MAX_BOXES
from pipeline.core.records import flatten_boxes


@dataclass
class Layouts:
    """Per-image columns a training sample needs, boxes padded to ``max_boxes``.

    ``phrase_ids`` index ``phrases`` (the dataset's unique phrases), so a phrase's text
    embedding is computed once however many boxes carry it; padding is -1.
    """

    image_ids: np.ndarray  # (N,) object
    sources: np.ndarray  # (N,) object
    files: np.ndarray  # (N,) object
    width: np.ndarray  # (N,) int64, original pixels
    height: np.ndarray  # (N,) int64
    captions: list  # N lists of strings
    boxes: np.ndarray  # (N, M, 4) float32 xyxy in [0, 1]
    mask: np.ndarray  # (N, M) bool
    phrase_ids: np.ndarray  # (N, M) int64, -1 where masked
    phrases: np.ndarray  # (P,) object, unique phrases

    def __len__(self) -> int:
        return len(self.image_ids)


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False)


def layouts_from_records(records: pa.Table, max_boxes: int = MAX_BOXES) -> Layouts:
    """Pad every record's boxes into fixed arrays, keeping the ``max_boxes`` largest.

    GLIGEN keeps the largest boxes when an image has too many; the ranking is done with
    one lexsort over all boxes of the table.
    """
    n = records.num_rows
    fb = flatten_boxes(records)
    owner = fb.image
    xyxy = fb.xyxy_as(np.float32)
    phrase = pc.fill_null(fb.phrase, "").dictionary_encode()
    phrase_index = phrase.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    phrases = phrase.dictionary.to_numpy(zero_copy_only=False).astype(object)

    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    order = np.lexsort((-area, owner))
    sorted_owner = owner[order]
    rank = np.arange(order.size) - np.searchsorted(sorted_owner, sorted_owner, side="left")
    keep = rank < max_boxes
    rows, slots, src = sorted_owner[keep], rank[keep], order[keep]

    boxes = np.zeros((n, max_boxes, 4), np.float32)
    mask = np.zeros((n, max_boxes), bool)
    phrase_ids = np.full((n, max_boxes), -1, np.int64)
    boxes[rows, slots] = xyxy[src]
    mask[rows, slots] = True
    phrase_ids[rows, slots] = phrase_index[src]
    return Layouts(
        image_ids=_column(records, "image_id").astype(object),
        sources=_column(records, "source").astype(object),
        files=_column(records, "file").astype(object),
        width=_column(records, "width").astype(np.int64),
        height=_column(records, "height").astype(np.int64),
        captions=[c or [] for c in records.column("captions").to_pylist()],
        boxes=boxes,
        mask=mask,
        phrase_ids=phrase_ids,
        phrases=phrases,
    )


def cover_crop(width, height, bucket_w, bucket_h, rng: np.random.Generator | None):
    """Resize-to-cover then crop window for each image, as SDXL's bucketed training does.

    Returns ``(resized_w, resized_h, left, top)`` int arrays: the image is scaled so that
    it covers its bucket, then a bucket-sized window is cut at ``(left, top)``. With no
    ``rng`` the window is centred (deterministic, used for validation).
    """
    width, height = np.asarray(width, np.float64), np.asarray(height, np.float64)
    bw, bh = np.asarray(bucket_w, np.int64), np.asarray(bucket_h, np.int64)
    scale = np.maximum(bw / width, bh / height)
    rw = np.maximum(np.ceil(width * scale - 1e-6).astype(np.int64), bw)
    rh = np.maximum(np.ceil(height * scale - 1e-6).astype(np.int64), bh)
    slack_w, slack_h = rw - bw, rh - bh
    if rng is None:
        left, top = slack_w // 2, slack_h // 2
    else:
        left = np.floor(rng.random(slack_w.shape) * (slack_w + 1)).astype(np.int64)
        top = np.floor(rng.random(slack_h.shape) * (slack_h + 1)).astype(np.int64)
    return rw, rh, left, top


def crop_boxes(boxes, mask, resized_w, resized_h, left, top, bucket_w, bucket_h, min_area):
    """Move normalised boxes into a crop window, clip them, and drop the ones left too small.

    ``boxes`` is ``(B, M, 4)`` normalised to the original image (so also to the resized
    one); the result is normalised to the crop. A box whose clipped area is below
    ``min_area`` (a fraction of the crop) is masked out and zeroed: an object mostly cut
    away by the crop would teach the adapters to put it where it no longer is.
    """
    b = np.asarray(boxes, np.float64)
    col = lambda a: np.asarray(a, np.float64).reshape(-1, 1)
    rw, rh, lx, ty, bw, bh = map(col, (resized_w, resized_h, left, top, bucket_w, bucket_h))
    x0 = np.clip((b[..., 0] * rw - lx) / bw, 0.0, 1.0)
    y0 = np.clip((b[..., 1] * rh - ty) / bh, 0.0, 1.0)
    x1 = np.clip((b[..., 2] * rw - lx) / bw, 0.0, 1.0)
    y1 = np.clip((b[..., 3] * rh - ty) / bh, 0.0, 1.0)
    out = np.stack([x0, y0, x1, y1], -1).astype(np.float32)
    area = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    keep = np.asarray(mask, bool) & (area >= min_area) & (area > 0)
    out[~keep] = 0.0
    return out, keep


def flip_boxes(boxes, mask, flip):
    """Mirror the boxes of the samples selected by ``flip`` (x -> 1 - x, ends swapped)."""
    out = np.array(boxes, np.float32, copy=True)
    f = np.asarray(flip, bool)
    mirrored = np.stack([1 - out[f, :, 2], out[f, :, 1], 1 - out[f, :, 0], out[f, :, 3]], -1)
    out[f] = np.where(np.asarray(mask, bool)[f][..., None], mirrored, 0.0)
    return out


def drop(n: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """Which samples lose their caption (or grounding): classifier-free guidance training."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1], got {p}")
    return rng.random(n) < p
