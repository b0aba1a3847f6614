"""``export coco``: a dataset directory back to COCO instances + captions JSON.

The export is the inverse of ``ingest coco``: image ids, category ids and licences come
from what ingest kept (the ``<source>:<id>`` image ids and the manifest's per-source
category and licence tables), and pixel boxes are written with enough digits that
re-ingesting gives bit-identical float32 coordinates. What COCOeval reads beyond the box
comes back as the source gave it: ``area`` (the mask's, which decides the size bucket),
the annotation ids, and the crowd regions (``iscrowd: 1``, COCO's ignore regions, kept
apart from the objects in the records' ``crowd`` column). ``info.groundset_sources``
says where each source's images live. Two files, as COCO ships them:
``instances.json`` (images, annotations, categories, licenses) and ``captions.json``
(same images, one annotation per caption).

Annotations are numbers only, so their JSON text is built column-wise with Arrow string
kernels and written straight from Arrow's buffers; strings (file names, captions,
category names) go through a JSON encoder. Annotations carry no ``segmentation``: the
records hold boxes only, and a made-up rectangle polygon would add 60% to the file for
no information (COCOeval's bbox mode and detectors' COCO loaders do not need it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.atomic import atomic_output_dir
from pipeline.core.dataset import BOX_COORDS, Dataset
from pipeline.core.outputs import claim_output
from pipeline.core.records import flatten_boxes
from pipeline.stages.export.common import (
    category_table,
    iter_parts,
    join_cols,
    load_meta,
    num_str,
    write_values,
)

KIND = "export-coco"
INSTANCES = "instances.json"
CHUNK = 500_000  # boxes per Arrow text batch: bounds memory and 2 GiB string offsets
CAPTIONS = "captions.json"
_INT = re.compile(r"-?\d+")
IMAGE_COLUMNS = ["image_id", "source", "file", "width", "height", "license", "split"]
INDEX_BOX_FIELDS = (*BOX_COORDS, "category", "ann_id")  # pass 1 reads no phrases


def parse_image_ids(image_ids: list[str], sources: list[str]) -> np.ndarray | None:
    """The integer ids in ``<source>:<int>`` image_ids, None unless every one has one."""
    raw = [i[len(s) + 1 :] if i.startswith(s + ":") else "" for i, s in zip(image_ids, sources)]
    if all(_INT.fullmatch(r) for r in raw):
        return np.array([int(r) for r in raw], dtype=np.int64)
    return None


def coco_image_ids(image_ids: list[str], sources: list[str]) -> tuple[np.ndarray, bool]:
    """COCO integer ids: the original ones when every image_id is ``<source>:<int>`` and
    they are unique (so a round trip keeps them), else 1..n in record order."""
    ids = parse_image_ids(image_ids, sources)
    if ids is not None and np.unique(ids).size == ids.size:
        return ids, True
    return np.arange(1, len(image_ids) + 1, dtype=np.int64), False


def _license_value(text: str):
    """Ingest stores a licence id as text; write integers back as integers."""
    if text == "" or text is None:
        return None
    return int(text) if _INT.fullmatch(text) else text


def _licenses(ds: Dataset) -> list:
    seen, out = set(), []
    for meta in ds.sources.values():
        for lic in meta.get("licenses") or []:
            if isinstance(lic, dict) and lic.get("id") not in seen:
                seen.add(lic.get("id"))
                out.append(lic)
    return out


class _Annotations:
    """The annotations array, written group by group and part by part as Arrow-built
    JSON text, CHUNK boxes at a time. ``area`` is the source's where it has one (COCO's
    is the mask's area, which decides COCOeval's size bucket), else the box's."""

    def __init__(self, f, names: list[str], cat_ids: list[int]) -> None:
        self.f, self.first = f, True
        self.names = pa.array(names, pa.string())
        self.cat_ids = np.asarray(cat_ids, dtype=np.int64)

    def write(self, fb, xywh: np.ndarray, ann_id: np.ndarray, image_ids, crowd: bool) -> None:
        cat_pos = np.asarray(pc.index_in(fb.category, value_set=self.names))
        category_id = self.cat_ids[cat_pos] if cat_pos.size else cat_pos
        image_id = image_ids[fb.image]
        source_area = np.asarray(fb.column("area").fill_null(np.nan), np.float64)
        area = np.where(np.isnan(source_area), xywh[:, 2] * xywh[:, 3], source_area)
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
                num_str(bx[:, 0]),
                ",",
                num_str(bx[:, 1]),
                ",",
                num_str(bx[:, 2]),
                ",",
                num_str(bx[:, 3]),
                '],"area":',
                num_str(area[s:e]),
                f',"iscrowd":{int(crowd)}}}',
            )
            write_values(self.f, text, skip_first=1 if self.first else 0)  # no comma first
            self.first = False


def _sources(ds: Dataset, out: Path) -> dict:
    """Each source's images root, relative to the export folder (like the manifests: the
    same bytes at any path, and a moved folder keeps finding its images)."""
    here = os.path.abspath(out)
    return {
        name: {
            "images_root": os.path.relpath(meta["images_root"], here)
            if isinstance(meta.get("images_root"), str) and meta["images_root"]
            else None
        }
        for name, meta in sorted(ds.sources.items())
    }


def _images(rec: pa.Table, ids: np.ndarray, kept_ids: bool, several: bool) -> list[dict]:
    cols = {
        c: rec.column(c).to_pylist()
        for c in ("image_id", "source", "file", "width", "height", "license", "split")
    }
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
    return images


def _captions(rec: pa.Table, ids: np.ndarray, first_id: int) -> list[dict]:
    caps = rec.column("captions").combine_chunks()
    lengths = np.asarray(pc.list_value_length(caps).fill_null(0))
    owner = np.repeat(ids, lengths).tolist()
    text = pc.list_flatten(caps).to_pylist()
    return [
        {"id": first_id + i, "image_id": o, "caption": t}
        for i, (o, t) in enumerate(zip(owner, text))
    ]


def _items(enc, f, values: list, first: bool) -> bool:
    """Append the JSON items of ``values`` to an open array (a comma between parts);
    returns whether the array is still empty."""
    if not values:
        return first
    body = enc.encode(values)[1:-1]  # msgspec writes "[" + ",".join(items) + "]"
    f.write(body if first else b"," + body)
    return False


def _index(ds: Dataset) -> dict:
    """Pass 1 over the parts, compact: the COCO image ids parsed from the image_ids
    (8 bytes an image), the source's annotation ids that are present (8 bytes a box),
    the missing ones per group and the categories used."""
    parsed, present, nulls, used = [], [], [0, 0], set()
    for part in iter_parts(ds, ["image_id", "source", "boxes", "crowd"], INDEX_BOX_FIELDS):
        if parsed is not None:
            src = part.column("source").to_pylist()
            got = parse_image_ids(part.column("image_id").to_pylist(), src)
            parsed = None if got is None else [*parsed, got]
        for g, name in enumerate(("boxes", "crowd")):
            fb = flatten_boxes(part.column(name))
            ann = fb.column("ann_id")
            present.append(np.asarray(ann.drop_null(), np.int64))
            nulls[g] += ann.null_count
            used.update(pc.unique(fb.category).to_pylist())
    ids = np.concatenate(parsed) if parsed else None
    given = np.concatenate(present) if present else np.zeros(0, np.int64)
    return {
        "ids": ids if ids is not None and np.unique(ids).size == ids.size else None,
        "ann_kept": bool(np.unique(given).size == given.size),
        "ann_next": int(max(given.max(initial=0), 0)) + 1,
        "nulls": nulls,
        "used": sorted(n for n in used if n is not None),
    }


def _ids(idx: dict, start: int, n: int) -> np.ndarray:
    """The COCO ids of rows start..start+n: the original ones when every image_id is
    ``<source>:<int>`` and they are unique (a round trip keeps them), else 1..N."""
    if idx["ids"] is not None:
        return idx["ids"][start : start + n]
    return np.arange(start + 1, start + n + 1, dtype=np.int64)


def _write_annotations(ds: Dataset, idx: dict, ann: _Annotations, enc, fc) -> None:
    """The object annotations (and the captions, into ``fc``), then the crowd regions:
    two passes over the parts, in the order a one-table export wrote them. Annotation
    ids are the source's when those present are unique, fresh ones after the largest
    for boxes without one (pseudo-labels), in export order; else (a merge of sources
    whose ids collide) 1..n in export order."""
    nxt = idx["ann_next"]
    fresh = [nxt, nxt + idx["nulls"][0]] if idx["ann_kept"] else None
    counter = 1
    first_caption, caption_id = True, 1
    for g, name in enumerate(("boxes", "crowd")):
        start = 0
        columns = ["width", "height", name] + (["captions"] if g == 0 else [])
        for rec in iter_parts(ds, columns):
            ids = _ids(idx, start, rec.num_rows)
            fb = flatten_boxes(rec.column(name))
            if fresh is not None:
                given = fb.column("ann_id")
                ann_id = np.array(given.fill_null(-1), np.int64)  # a writable copy
                missing = np.asarray(given.is_null(), bool)
                ann_id[missing] = np.arange(fresh[g], fresh[g] + int(missing.sum()))
                fresh[g] += int(missing.sum())
            else:
                ann_id = np.arange(counter, counter + fb.image.size)
                counter += fb.image.size
            w, h = rec.column("width").to_numpy(), rec.column("height").to_numpy()
            ann.write(fb, fb.pixel_xywh(w, h), ann_id, ids, crowd=g == 1)
            if g == 0:
                caps = _captions(rec, ids, caption_id)
                caption_id += len(caps)
                first_caption = _items(enc, fc, caps, first_caption)
            start += rec.num_rows


def export_coco(dataset: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``out/instances.json`` and ``out/captions.json``; returns the instances path.

    Part by part, so memory is set by the part size plus 8 bytes an image and a box:
    pass 1 (``_index``) decides the image ids, the annotation ids and the categories;
    then the images go to both files, then the object annotations (with the captions),
    then the crowd regions, each a pass over the parts.
    """
    ds = load_meta(dataset)
    out = Path(out)
    with claim_output(out, kind=KIND, inputs=ds.input_paths(), overwrite=overwrite):
        idx = _index(ds)
        names, cat_ids = category_table(ds, pa.array(idx["used"], pa.string()))
        enc = msgspec.json.Encoder()
        info = {
            "description": f"exported by groundset from {ds.path}",
            "groundset_sources": _sources(ds, out),
            "groundset_annotation_ids": "source" if idx["ann_kept"] else "renumbered",
        }
        categories = [
            {"id": i, "name": n, "supercategory": _supercategory(ds, n)}
            for n, i in zip(names, cat_ids)
        ]
        head = b'{"info":' + enc.encode(info) + b',"licenses":' + enc.encode(_licenses(ds))
        kept_ids, several = idx["ids"] is not None, len(ds.sources) > 1
        with (
            atomic_output_dir(out, kind=KIND) as tmp,
            open(tmp / INSTANCES, "wb") as fi,
            open(tmp / CAPTIONS, "wb") as fc,
        ):
            for f in (fi, fc):
                f.write(head + b',"images":[')
            first, start = True, 0
            for rec in iter_parts(ds, IMAGE_COLUMNS):
                images = _images(rec, _ids(idx, start, rec.num_rows), kept_ids, several)
                for f in (fi, fc):
                    _items(enc, f, images, first)
                first = first and not images
                start += rec.num_rows
            for f in (fi, fc):
                f.write(b'],"annotations":[')
            _write_annotations(ds, idx, _Annotations(fi, names, cat_ids), enc, fc)
            fi.write(b'],"categories":' + enc.encode(categories) + b"}\n")
            fc.write(b"]}\n")
        if len(ds.sources) > 1:  # a summary: said even with --quiet (it hides bars only)
            print(
                f"export coco: {len(ds.sources)} sources; each image's file_name is relative "
                "to its groundset_source's images root (see info.groundset_sources)"
            )
        return out / INSTANCES


def _supercategory(ds: Dataset, name: str) -> str:
    for meta in ds.sources.values():
        for c in meta.get("categories") or []:
            if (
                isinstance(c, dict)
                and c.get("name") == name
                and isinstance(c.get("supercategory"), str)
            ):
                return c["supercategory"]
    return ""
