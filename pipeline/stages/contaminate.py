"""The contamination step of the harm sweep: natural data with grid-like data mixed in.

Issue #13 asks whether grid-like training layouts make GLIGEN's adapters tile their
outputs. To answer it the adapters must be trained on sets that differ in one thing
only: the share of grid-like images. ``contaminate`` builds such a set, of a fixed
``size``, from a natural dataset and grid-like images of two kinds the audit knows:

* images taken from a **grid source** dataset (the demo's lattices of objects and
  collages, or a user's own suspect source);
* **mosaics** composed here from natural images, as mosaic augmentation makes them:
  k x k natural pictures scaled into the tiles of one frame, their boxes scaled with
  them. Each tile keeps its own background and lighting, so the seams are real steps in
  the pixels, not only a regular layout.

Everything is drawn from seeded streams so that the arms are nested: the natural
images of a 50% arm are the first half of those of the 0% arm, the grid images of the
25% arm are the first of those of the 50% arm, and mosaic ``i`` is the same picture in
every arm. Only the share changes between arms; the natural data, seeds and steps do
not. The manifest's ``mix`` section counts every image by kind and adds up to ``size``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from pipeline.core.dataset import (
    Dataset,
    dataset_input_paths,
    n_boxes,
    read_dataset,
    write_dataset,
)
from pipeline.core.errors import UserError
from pipeline.core.images import read_rgb
from pipeline.core.outputs import claim_output
from pipeline.core.progress import progress
from pipeline.core.records import RECORD_SCHEMA

STAGE = "contaminate"
MOSAIC_SOURCE = "mosaic"  # the source name of the composed images
MOSAIC_IMAGES = "images"  # their folder inside the output dataset
NATURAL, GRID, MOSAIC = 0, 1, 2  # seeded streams, one per kind: arms stay nested


def split_counts(size: int, share: float, mosaic_fraction: float) -> dict:
    """How many images of each kind an arm holds; they add up to ``size`` exactly."""
    grid_like = round(share * size)
    mosaic = round(mosaic_fraction * grid_like)
    return {"natural": size - grid_like, "grid": grid_like - mosaic, "mosaic": mosaic}


def _order(n: int, seed: int, stream: int) -> np.ndarray:
    return np.random.default_rng([seed, stream]).permutation(n)


def _check(share, size, mosaic_fraction, tiles, n_natural, n_grid) -> dict:
    if not 0.0 <= share <= 1.0:
        raise UserError(f"--share must lie within [0, 1], got {share}")
    if not 0.0 <= mosaic_fraction <= 1.0:
        raise UserError(f"--mosaic-fraction must lie within [0, 1], got {mosaic_fraction}")
    if not tiles or any(k < 2 or k > 8 for k in tiles):
        raise UserError(f"--mosaic-tiles must be tile counts per side in 2..8, got {tiles}")
    if size < 1:
        raise UserError(f"--size must be >= 1, got {size}")
    counts = split_counts(size, share, mosaic_fraction)
    if counts["natural"] > n_natural:
        raise UserError(
            f"--size {size} at --share {share:g} needs {counts['natural']} natural images, "
            f"the natural dataset has {n_natural}"
        )
    if counts["grid"] > n_grid:
        raise UserError(
            f"--share {share:g} of --size {size} needs {counts['grid']} grid-source images "
            f"(mosaic fraction {mosaic_fraction:g}), the grid dataset has {n_grid}; "
            "lower --size or raise --mosaic-fraction"
        )
    if counts["mosaic"] and n_natural == 0:
        raise UserError("mosaics are composed from natural images; the natural dataset is empty")
    return counts


def _scaled_boxes(boxes: list, k: int, row: int, col: int) -> list:
    """A tile's boxes in the mosaic's normalised frame."""
    out = []
    for b in boxes:
        out.append(
            {
                **b,
                "x0": (col + b["x0"]) / k,
                "x1": (col + b["x1"]) / k,
                "y0": (row + b["y0"]) / k,
                "y1": (row + b["y1"]) / k,
                "origin": f"{b.get('origin') or 'unknown'}+mosaic",
            }
        )
    return out


def compose_mosaic(natural: Dataset, rows: list[dict], k: int) -> tuple[bytes, list, int]:
    """k x k natural pictures (row-major) in one frame the size of the first; PNG bytes,
    the boxes, and the frame side. Tile edges are rounded so the tiles cover the frame."""
    side = int(rows[0]["width"])
    frame = np.zeros((side, side, 3), np.uint8)
    edges = np.rint(np.linspace(0, side, k + 1)).astype(int)
    boxes = []
    for i, rec in enumerate(rows):
        r, c = divmod(i, k)
        w, h = edges[c + 1] - edges[c], edges[r + 1] - edges[r]
        pic = Image.fromarray(read_rgb(natural.image_path(rec["source"], rec["file"])))
        tile = np.asarray(pic.resize((int(w), int(h)), Image.Resampling.BOX))
        frame[edges[r] : edges[r + 1], edges[c] : edges[c + 1]] = tile
        boxes += _scaled_boxes(rec["boxes"] or [], k, r, c)
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue(), boxes, side


def _mosaics(natural: Dataset, n: int, tiles: list[int], seed: int) -> tuple[list, dict]:
    """``n`` mosaic records and their PNG files; mosaic ``i`` depends on ``i`` and the seed
    only, so every arm that holds it holds the same picture."""
    pool = natural.records.select(["source", "file", "width", "captions", "boxes"]).to_pylist()
    records, files = [], {}
    for i in progress(range(n), desc="mosaics", unit="img"):
        rng = np.random.default_rng([seed, MOSAIC, i])
        k = int(tiles[rng.integers(len(tiles))])
        picked = [pool[j] for j in rng.choice(len(pool), k * k, replace=len(pool) < k * k)]
        png, boxes, side = compose_mosaic(natural, picked, k)
        file = f"{i + 1:06d}.png"
        files[f"{MOSAIC_IMAGES}/{file}"] = png
        first = [(p["captions"] or [""])[0] for p in picked]
        records.append(
            {
                "image_id": f"{MOSAIC_SOURCE}:{i + 1}",
                "source": MOSAIC_SOURCE,
                "file": file,
                "width": side,
                "height": side,
                "captions": [f"a {k}x{k} collage: " + "; ".join(first)],
                "license": None,
                "split": "train",
                "boxes": boxes,
            }
        )
    return records, files


def _taken(ds: Dataset, n: int, seed: int, stream: int) -> pa.Table:
    rows = np.sort(_order(ds.records.num_rows, seed, stream)[:n])
    return ds.records.take(pa.array(rows, pa.int64()))


def contaminate(
    natural: str | Path,
    grid: str | Path | None,
    out: str | Path,
    *,
    share: float,
    size: int | None = None,
    mosaic_fraction: float = 0.5,
    mosaic_tiles: tuple[int, ...] = (2, 3),
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Write one arm of the sweep: ``size`` images, a ``share`` of them grid-like."""
    out = Path(out)
    inputs = [*dataset_input_paths(natural), *(dataset_input_paths(grid) if grid else [])]
    with claim_output(out, kind=STAGE, inputs=inputs, overwrite=overwrite):
        nat = read_dataset(natural)
        grd = read_dataset(grid) if grid else None
        n_grid_pool = grd.records.num_rows if grd else 0
        size = nat.records.num_rows if size is None else size
        tiles = sorted({int(k) for k in mosaic_tiles})
        counts = _check(share, size, mosaic_fraction, tiles, nat.records.num_rows, n_grid_pool)
        parts = [_taken(nat, counts["natural"], seed, NATURAL)]
        sources = dict(nat.sources)
        if counts["grid"]:
            parts.append(_taken(grd, counts["grid"], seed, GRID))
            clash = set(sources) & set(grd.sources)
            if clash:
                raise UserError(f"the natural and grid datasets share source names {sorted(clash)}")
            sources.update(grd.sources)
        mosaic_records, files = _mosaics(nat, counts["mosaic"], tiles, seed)
        if mosaic_records:
            parts.append(pa.Table.from_pylist(mosaic_records, schema=RECORD_SCHEMA))
            sources[MOSAIC_SOURCE] = {
                "images_root": str(out / MOSAIC_IMAGES),
                "format": "mosaic",
                "tiles": tiles,
            }
        records = pa.concat_tables([p.cast(RECORD_SCHEMA) for p in parts])
        records = records.set_column(
            records.schema.get_field_index("split"),
            "split",
            pa.array(["train"] * records.num_rows, pa.string()),
        )
        mix = {
            **counts,
            "size": size,
            "share": share,
            "grid_like": counts["grid"] + counts["mosaic"],
            "pools": {"natural": nat.records.num_rows, "grid": n_grid_pool},
        }
        assert mix["natural"] + mix["grid"] + mix["mosaic"] == size == records.num_rows, mix

        return write_dataset(
            out,
            records,
            None,
            stage=STAGE,
            inputs=[str(natural), *([str(grid)] if grid else [])],
            params={
                "share": share,
                "size": size,
                "mosaic_fraction": mosaic_fraction,
                "mosaic_tiles": tiles,
                "seed": seed,
            },
            images_in=records.num_rows,
            boxes_in=n_boxes(records),
            sources=sources,
            extra={"mix": mix},
            extra_files=files,
        )
