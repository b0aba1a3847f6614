"""``export coco``'s work on one records part: a function each, so that the parts can
run as dask tasks (``--scheduler``) and the client only writes their bytes in order.

Every id a part needs (COCO image ids, annotation ids, caption ids) is decided by the
client from pass 1's compact per-part counts (``index_part``) and handed to the part,
so parts are independent and the files are the same bytes however they are computed.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.dataset import BOX_COORDS, read_part
from pipeline.core.hashing import string_digests
from pipeline.core.records import flatten_boxes
from pipeline.stages.export.common import join_cols, num_str, write_values, xywh_numbers

CHUNK = 500_000  # boxes per Arrow text batch: bounds memory and 2 GiB string offsets
IMAGE_COLUMNS = ["image_id", "source", "file", "width", "height", "license", "split"]
INDEX_BOX_FIELDS = (*BOX_COORDS, "category", "ann_id")  # pass 1 reads no phrases
GROUPS = ("boxes", "crowd")  # objects, then crowd regions (iscrowd 1), as COCO lists them
_INT = re.compile(r"-?\d+")


def parse_image_ids(image_ids: list[str], sources: list[str]) -> np.ndarray | None:
    """The integer ids in ``<source>:<int>`` image_ids, None unless every one has one."""
    raw = [i[len(s) + 1 :] if i.startswith(s + ":") else "" for i, s in zip(image_ids, sources)]
    if all(_INT.fullmatch(r) for r in raw):
        return np.array([int(r) for r in raw], dtype=np.int64)
    return None


def index_part(path: Path, part: Path, rows: int | None) -> dict:
    """Pass 1 for one part, compact: parsed COCO ids (8 B an image), the source's
    annotation ids that are present (8 B a box), counts per group, caption count,
    categories used, and digests of the image ids (the client checks they are unique)."""
    rec = read_part(
        path, part, ["image_id", "source", "boxes", "crowd", "captions"], rows, INDEX_BOX_FIELDS
    )
    ids = rec.column("image_id").to_pylist()
    out = {
        "rows": rec.num_rows,
        "parsed": parse_image_ids(ids, rec.column("source").to_pylist()),
        "digests": string_digests(ids),
        "captions": int(pc.sum(pc.list_value_length(rec.column("captions"))).as_py() or 0),
        "present": [],
        "nulls": [],
        "sizes": [],
        "used": set(),
    }
    for name in GROUPS:
        fb = flatten_boxes(rec.column(name))
        ann = fb.column("ann_id")
        out["present"].append(np.asarray(ann.drop_null(), np.int64))
        out["nulls"].append(ann.null_count)
        out["sizes"].append(int(fb.image.size))
        out["used"].update(n for n in pc.unique(fb.category).to_pylist() if n is not None)
    return out


def _license_value(text: str):
    """Ingest stores a licence id as text; write integers back as integers."""
    if text == "" or text is None:
        return None
    return int(text) if _INT.fullmatch(text) else text


def images_part(path, part, rows, ids: np.ndarray, kept_ids: bool, several: bool) -> bytes:
    """The part's items of the ``images`` array, comma-separated, without brackets."""
    rec = read_part(path, part, IMAGE_COLUMNS, rows)
    cols = {c: rec.column(c).to_pylist() for c in IMAGE_COLUMNS}
    images = []
    for k in range(rec.num_rows):  # per image: the strings need JSON escaping
        im = {
            "id": int(ids[k]),
            "file_name": cols["file"][k],
            "width": cols["width"][k],
            "height": cols["height"][k],
        }
        lic = _license_value(cols["license"][k])
        if lic is not None:
            im["license"] = lic
        if not kept_ids:
            im["groundset_image_id"] = cols["image_id"][k]
        if several:  # which images root file_name is relative to
            im["groundset_source"] = cols["source"][k]
        if cols["split"][k]:
            im["split"] = cols["split"][k]
        images.append(im)
    return msgspec.json.encode(images)[1:-1]  # msgspec: "[" + ",".join(items) + "]"


def annotations_part(
    path, part, rows, group: int, ids, ann: tuple, names, cat_ids, caption_id: int | None
) -> tuple[bytes, bytes]:
    """The part's annotations of one group, each item preceded by a comma, and (for
    the objects' pass) its caption annotations likewise. ``ann`` is ``("source",
    first fresh id)``: the source's ids, fresh ones from there for boxes without one;
    or ``("renumber", first id)``: consecutive ids. ``area`` is the source's where it
    has one (COCO's is the mask's, which decides COCOeval's size bucket), else the box's.
    """
    name = GROUPS[group]
    columns = ["width", "height", name] + (["captions"] if caption_id is not None else [])
    rec = read_part(path, part, columns, rows)
    fb = flatten_boxes(rec.column(name))
    if ann[0] == "source":
        given = fb.column("ann_id")
        ann_id = np.array(given.fill_null(-1), np.int64)  # a writable copy
        missing = np.asarray(given.is_null(), bool)
        ann_id[missing] = np.arange(ann[1], ann[1] + int(missing.sum()))
    else:
        ann_id = np.arange(ann[1], ann[1] + fb.image.size)
    xywh = fb.pixel_xywh(rec.column("width").to_numpy(), rec.column("height").to_numpy())
    cat_pos = np.asarray(pc.index_in(fb.category, value_set=pa.array(names, pa.string())))
    category_id = np.asarray(cat_ids, dtype=np.int64)[cat_pos] if cat_pos.size else cat_pos
    image_id = np.asarray(ids)[fb.image]
    source_area = np.asarray(fb.column("area").fill_null(np.nan), np.float64)
    area = np.where(np.isnan(source_area), xywh[:, 2] * xywh[:, 3], source_area)
    buf = io.BytesIO()
    for s in range(0, fb.image.size, CHUNK):
        e = min(s + CHUNK, fb.image.size)
        bx = xywh[s:e]
        text = join_cols(
            ',{"id":',
            num_str(ann_id[s:e]),
            ',"image_id":',
            num_str(image_id[s:e]),
            ',"category_id":',
            num_str(category_id[s:e]),
            ',"bbox":[',
            *xywh_numbers(bx),
            '],"area":',
            num_str(area[s:e]),
            f',"iscrowd":{group}}}',
        )
        write_values(buf, text)
    captions = b""
    if caption_id is not None:
        caps = rec.column("captions").combine_chunks()
        lengths = np.asarray(pc.list_value_length(caps).fill_null(0))
        owner = np.repeat(np.asarray(ids), lengths).tolist()
        text = pc.list_flatten(caps).to_pylist()
        items = [
            {"id": caption_id + i, "image_id": o, "caption": t}
            for i, (o, t) in enumerate(zip(owner, text))
        ]
        captions = b"," + msgspec.json.encode(items)[1:-1] if items else b""
    return buf.getvalue(), captions
