"""The worker side of the label stage: one shard of image files in, one Arrow table out.

This is the only code that runs on dask workers, so it is small and self-contained: a
picklable ``LabelJob`` says which detector to build and how to read images, and each
worker process builds that detector once and keeps it for every later shard. The table
it returns holds raw detector output in pixels (or a reject reason per image); turning
that into records (phrases, captions, clipping, origins) happens once, in the driver.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from detectors.base import DetectorOptions
from pipeline.core.images import ImageReject, load_image

RAW_BOX = pa.struct(
    [
        pa.field("category", pa.string()),
        pa.field("score", pa.float32()),
        pa.field("x0", pa.float32()),
        pa.field("y0", pa.float32()),
        pa.field("x1", pa.float32()),
        pa.field("y1", pa.float32()),
    ]
)
SHARD_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("reason", pa.string()),  # null when the image was read and detected
        pa.field("detail", pa.string()),
        pa.field("boxes", pa.list_(RAW_BOX)),  # pixel xyxy, displayed orientation
    ]
)


@dataclass(frozen=True)
class LabelJob:
    """Everything a worker needs to label a shard; hashable, so it keys the model cache."""

    weights: str
    options: DetectorOptions
    root: str
    batch: int
    device: str = "cpu"
    threads: int | None = None
    max_pixels: int = 0  # 0: pipeline.core.defaults.MAX_IMAGE_PIXELS


CPU_KEY = "groundset.cpu_s"
_CACHE: dict = {}


def detector_for(job: LabelJob):
    """Build the job's detector once per process (a dask worker keeps it across shards)."""
    key = (job.weights, job.options, job.device, job.threads)
    if key not in _CACHE:
        from detectors.ultralytics_backend import UltralyticsDetector

        _CACHE.clear()  # one model per worker: a new job replaces the old one
        _CACHE[key] = UltralyticsDetector(
            job.weights, job.options, device=job.device, threads=job.threads
        )
    return _CACHE[key]


def class_names(job: LabelJob) -> list[str]:
    """The detector's class names, asked of a worker so the driver need not load a model."""
    return list(detector_for(job).names)


def _load(root: str, file: str, max_pixels: int):
    kwargs = {"max_pixels": max_pixels} if max_pixels else {}
    try:
        return load_image(os.path.join(root, file), **kwargs), None, ""
    except ImageReject as r:
        return None, r.reason, r.detail


def _load_batch(root: str, files: list[str], max_pixels: int) -> list:
    return [_load(root, f, max_pixels) for f in files]


def label_shard(
    job: LabelJob, files: list[str], on_batch: Callable[[int], None] | None = None
) -> pa.Table:
    """Detect objects in ``files`` (relative to ``job.root``), in order, batch by batch.

    The next batch is decoded on a thread while the detector runs on the current one;
    decoding releases the GIL, so reading images costs little wall time next to the model.
    """
    det = detector_for(job)
    cpu0 = time.process_time()
    batches = [files[i : i + job.batch] for i in range(0, len(files), job.batch)]
    cols = {k: [] for k in ("file", "width", "height", "reason", "detail")}
    box_lists = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        nxt = pool.submit(_load_batch, job.root, batches[0], job.max_pixels) if batches else None
        for k, names in enumerate(batches):
            loaded = nxt.result()
            if k + 1 < len(batches):
                nxt = pool.submit(_load_batch, job.root, batches[k + 1], job.max_pixels)
            arrays = [a for a, _, _ in loaded if a is not None]
            found = iter(det.detect(arrays))
            for name, (arr, reason, detail) in zip(names, loaded):
                d = next(found) if arr is not None else None
                h, w = (arr.shape[:2]) if arr is not None else (0, 0)
                cols["file"].append(name)
                cols["width"].append(w)
                cols["height"].append(h)
                cols["reason"].append(reason)
                cols["detail"].append(detail)
                box_lists.append(d)
            if on_batch is not None:
                on_batch(len(names))
    cols["boxes"] = _boxes_array(box_lists)
    # CPU seconds of this process for the shard (all its threads): on a shared machine
    # wall time says little about cost, CPU time per image does.
    meta = {CPU_KEY: repr(time.process_time() - cpu0)}
    return pa.table(cols, schema=SHARD_SCHEMA).replace_schema_metadata(meta)


def shard_cpu_seconds(table: pa.Table) -> float:
    meta = table.schema.metadata or {}
    return float(meta.get(CPU_KEY.encode(), b"0") or 0)


def _boxes_array(dets: list) -> pa.ListArray:
    """Per-image detections as one list<struct> column, built from concatenated arrays."""
    counts = np.array([len(d) if d is not None else 0 for d in dets], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    present = [d for d in dets if d is not None and len(d)]
    xyxy = np.concatenate([d.xyxy for d in present]) if present else np.zeros((0, 4), np.float32)
    scores = np.concatenate([d.scores for d in present]) if present else np.zeros(0, np.float32)
    names = list(itertools.chain.from_iterable(d.class_names for d in present))
    children = [pa.array(names, pa.string()), pa.array(scores, pa.float32())] + [
        pa.array(xyxy[:, j], pa.float32()) for j in range(4)
    ]
    struct = pa.StructArray.from_arrays(children, fields=list(RAW_BOX))
    return pa.ListArray.from_arrays(pa.array(offsets), struct)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def shard_path(work: Path, index: int) -> Path:
    return work / shard_name(index)
