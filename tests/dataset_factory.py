"""Small real dataset directories for curate/export tests.

They are written by the real writer (``assemble`` + ``write_dataset``), with real JPEG
files when a test needs pixels, so the stages under test read exactly what ingest
would have produced.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.core.dataset import write_dataset
from pipeline.core.records import assemble


def write_jpeg(path: Path, width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)


def make_dataset(
    out: Path,
    source: str,
    images: list[dict],
    boxes: list[dict],
    images_root: Path | None = None,
) -> Path:
    """Write a dataset dir. ``images``: dicts of record columns; ``boxes``: dicts with
    ``image`` (index into images), ``xyxy`` (normalised) and optional phrase/category."""
    cols = {
        "image_id": [f"{source}:{im['id']}" for im in images],
        "source": [source] * len(images),
        "file": [im["file"] for im in images],
        "width": [im.get("width", 64) for im in images],
        "height": [im.get("height", 48) for im in images],
        "captions": [im.get("captions", []) for im in images],
        "license": [im.get("license", "") for im in images],
        "split": [im.get("split", "") for im in images],
    }
    xyxy = np.array([b["xyxy"] for b in boxes], dtype=np.float32).reshape(-1, 4)
    box_cols = {
        "image_index": [b["image"] for b in boxes],
        "phrase": [b.get("phrase", b.get("category", "dog")) for b in boxes],
        "category": [b.get("category", "dog") for b in boxes],
        "x0": xyxy[:, 0],
        "y0": xyxy[:, 1],
        "x1": xyxy[:, 2],
        "y1": xyxy[:, 3],
        "score": [b.get("score", 1.0) for b in boxes],
        "origin": [b.get("origin", "test") for b in boxes],
    }
    records = assemble(cols, box_cols)
    sources = {source: {"images_root": str(images_root) if images_root else None}}
    write_dataset(
        out,
        records,
        None,
        stage="test",
        inputs=[],
        params={},
        images_in=len(images),
        boxes_in=len(boxes),
        sources=sources,
    )
    return out


def random_dataset(
    out: Path,
    source: str,
    n_images: int,
    seed: int,
    images_root=None,
    max_boxes_per_image: int = 40,
) -> Path:
    """Random boxes of widely varying size (many below GLIGEN's 1% area), some ties."""
    rng = np.random.default_rng(seed)
    images = [
        {
            "id": i,
            "file": f"{i:05d}.jpg",
            "width": int(rng.integers(16, 640)),
            "height": int(rng.integers(16, 640)),
            "captions": [f"picture {i}"],
        }
        for i in range(n_images)
    ]
    counts = rng.integers(0, max_boxes_per_image + 1, size=n_images)
    owner = np.repeat(np.arange(n_images), counts)
    side = rng.choice([0.05, 0.1, 0.2, 0.3, 0.5], size=(owner.size, 2)) * rng.uniform(
        0.5, 1.5, size=(owner.size, 1)
    )
    side = np.where(rng.random((owner.size, 1)) < 0.2, 0.1, side)  # exact area ties
    x0 = rng.uniform(0, 1 - side[:, 0])
    y0 = rng.uniform(0, 1 - side[:, 1])
    boxes = [
        {"image": int(o), "xyxy": (a, b, a + w, b + h), "category": f"c{int(o) % 3}"}
        for o, a, b, w, h in zip(owner, x0, y0, side[:, 0], side[:, 1])
    ]
    return make_dataset(out, source, images, boxes, images_root)
