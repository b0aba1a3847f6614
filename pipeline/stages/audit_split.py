"""``groundset audit --remediate split``: mosaics and tiled composites become their tiles.

For one records part, each grid-like image whose tiles ``analysis.tiles`` can find is
rejected as ``split_into_tiles`` (detail: how many tiles) and each tile with boxes left
becomes a new record: id ``<id>#tile<k>``, source ``<source>+tiles`` (its own images
root inside the remediated dataset, ``tiles/<source>/``), size the tile's pixels,
boxes clipped to the tile and renormalised, those under GLIGEN's minimum area rejected
as ``box_too_small``. Captions, license and split are the composite's. When the
composite's file is found inside its source's images root the tile is cropped from it
and written as PNG; otherwise the record has no image, as its composite had none.

Grid-like images that cannot be split (lattices, rows, no free cross) are left to the
caller, which rejects them as ``grid_like``. The manifest counts the tiles as added
images: images in + added = kept + rejected; every box of a split image is either in
one tile or rejected.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from analysis.report_gallery import safe_path
from analysis.tiles import split_boxes
from pipeline.core.images import ImageReject, load_image
from pipeline.core.records import BOX, IMAGE, RECORD_SCHEMA, reject_rows

SPLIT = "split_into_tiles"
BOX_TOO_SMALL = "box_too_small"
TILES = "tiles"


def tile_source(source: str) -> str:
    return f"{source}+tiles"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "unnamed"


def tile_sources(sources: dict, out: Path) -> dict:
    """The tile sources' images roots (absolute: the writer stores them relative)."""
    return {tile_source(s): {"images_root": str(out / TILES / _safe(s))} for s in sources}


def _crop_png(path: Path | None, window, size) -> bytes | None:
    if path is None:
        return None
    from PIL import Image

    try:
        rgb = load_image(path)
    except ImageReject:
        return None
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = window
    box = (round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h))
    buf = io.BytesIO()
    Image.fromarray(rgb).crop(box).resize(size).save(buf, format="PNG")
    return buf.getvalue()


def split_part(records: pa.Table, rows: np.ndarray, roots: dict, tmp: Path, min_area: float):
    """Split the given rows of one part. Returns (tile records, rejects, rows split,
    boxes dropped): the rows not in ``rows split`` could not be split."""
    tile_rows, rejects, done = [], [], []
    sub = records.take(pa.array(rows, pa.int64())).to_pylist()
    for row, rec in zip(rows, sub):
        boxes = rec["boxes"] or []
        xy = np.array([[b["x0"], b["y0"], b["x1"], b["y1"]] for b in boxes], float).reshape(-1, 4)
        tiles = split_boxes(xy, min_area)
        if tiles is None or not any(t.index.size for t in tiles):
            continue
        done.append(row)
        src = rec["source"]
        image = safe_path(roots.get(src), rec["file"])
        made, dropped = 0, []
        for k, t in enumerate(tiles):
            dropped += t.dropped.tolist()
            if not t.index.size:
                continue
            x0, y0, x1, y1 = t.window
            size = (
                max(1, round((x1 - x0) * rec["width"])),
                max(1, round((y1 - y0) * rec["height"])),
            )
            name = f"{_safe(rec['image_id'])}_tile{k}.png"
            png = _crop_png(image, t.window, size)
            if png is not None:
                target = tmp / TILES / _safe(src) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(png)
            new_boxes = []
            for i, (a, b, c, d) in zip(t.index, t.boxes):
                nb = dict(boxes[i], x0=float(a), y0=float(b), x1=float(c), y1=float(d))
                nb["area"] = None  # the source's (mask) area is of the uncut object
                new_boxes.append(nb)
            tile_rows.append(
                {
                    **rec,
                    "image_id": f"{rec['image_id']}#tile{k}",
                    "source": tile_source(src),
                    "file": name,
                    "width": size[0],
                    "height": size[1],
                    "boxes": new_boxes,
                    "crowd": None,
                }
            )
            made += 1
        rejects.append(
            reject_rows(
                stage="audit",
                source=[src],
                kind=IMAGE,
                image_id=[rec["image_id"]],
                file=[rec["file"]],
                box_index=[-1],
                reason=SPLIT,
                detail=[f"{made} tiles"],
            )
        )
        if dropped:
            rejects.append(
                reject_rows(
                    stage="audit",
                    source=src,
                    kind=BOX,
                    image_id=[rec["image_id"]] * len(dropped),
                    file=rec["file"],
                    box_index=sorted(dropped),
                    reason=BOX_TOO_SMALL,
                    detail="clipped to its tile",
                )
            )
    table = pa.Table.from_pylist(tile_rows, schema=RECORD_SCHEMA) if tile_rows else None
    return table, rejects, np.asarray(done, np.int64)
