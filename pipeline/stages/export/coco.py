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
from itertools import pairwise
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.atomic import atomic_output_dir
from pipeline.core.dataset import Dataset
from pipeline.core.outputs import claim_output
from pipeline.core.records import flatten_boxes
from pipeline.stages.export.common import (
    category_table,
    join_cols,
    load,
    num_str,
    write_values,
)

KIND = "export-coco"
INSTANCES = "instances.json"
CHUNK = 500_000  # boxes per Arrow text batch: bounds memory and 2 GiB string offsets
CAPTIONS = "captions.json"
_INT = re.compile(r"-?\d+")


def coco_image_ids(image_ids: list[str], sources: list[str]) -> tuple[np.ndarray, bool]:
    """COCO integer ids: the original ones when every image_id is ``<source>:<int>`` and
    they are unique (so a round trip keeps them), else 1..n in record order."""
    raw = [i[len(s) + 1 :] if i.startswith(s + ":") else "" for i, s in zip(image_ids, sources)]
    if all(_INT.fullmatch(r) for r in raw):
        ids = np.array([int(r) for r in raw], dtype=np.int64)
        if np.unique(ids).size == ids.size:
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


def annotation_ids(given: list[pa.Array]) -> tuple[list[np.ndarray], bool]:
    """COCO annotation ids per group: the source's own (``ann_id``) when those present are
    unique, with fresh ids after the largest for boxes that have none (pseudo-labels);
    else (a merge of sources whose ids collide) 1..n in export order."""
    arrays = [np.asarray(a.fill_null(-1), np.int64) for a in given]
    nulls = [np.asarray(a.is_null(), bool) for a in given]
    present = np.concatenate([x[~m] for x, m in zip(arrays, nulls)]) if arrays else []
    if np.unique(present).size == len(present):
        nxt = int(max(present.max(initial=0), 0)) + 1
        out = []
        for x, m in zip(arrays, nulls):
            x = x.copy()
            x[m] = np.arange(nxt, nxt + int(m.sum()))
            nxt += int(m.sum())
            out.append(x)
        return out, True
    sizes = np.cumsum([0] + [x.size for x in arrays])
    return [np.arange(s + 1, e + 1) for s, e in pairwise(sizes)], False


def _write_annotations(f, groups: list, ids: np.ndarray, names: list[str], cat_ids: list[int]):
    """Stream the annotations array, CHUNK boxes at a time, as Arrow-built JSON text.

    ``groups`` holds (FlatBoxes, pixel xywh, annotation ids, iscrowd) for the objects and
    the crowd regions. ``area`` is the source's where it has one (COCO's is the mask's
    area, which decides COCOeval's size bucket), else the box's.
    """
    f.write(b"[")
    first = True
    for fb, xywh, ann_id, crowd in groups:
        cat_pos = np.asarray(pc.index_in(fb.category, value_set=pa.array(names, pa.string())))
        category_id = np.asarray(cat_ids, dtype=np.int64)[cat_pos] if cat_pos.size else cat_pos
        image_id = ids[fb.image]
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
            write_values(f, text, skip_first=1 if first else 0)  # no comma before the first
            first = False
    f.write(b"]")


def _groups(ds: Dataset) -> tuple[list, bool]:
    """(FlatBoxes, pixel xywh, annotation ids, iscrowd) for the objects and crowd regions."""
    rec = ds.records
    w, h = rec.column("width").to_numpy(), rec.column("height").to_numpy()
    flat = [flatten_boxes(rec.column("boxes")), flatten_boxes(rec.column("crowd"))]
    ann_ids, kept = annotation_ids([fb.column("ann_id") for fb in flat])
    groups = [
        (fb, fb.pixel_xywh(w, h), a, crowd) for fb, a, crowd in zip(flat, ann_ids, (False, True))
    ]
    return groups, kept


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


def _images(ds: Dataset, ids: np.ndarray, kept_ids: bool, several: bool) -> list[dict]:
    rec = ds.records
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


def _captions(ds: Dataset, ids: np.ndarray) -> list[dict]:
    caps = ds.records.column("captions").combine_chunks()
    lengths = np.asarray(pc.list_value_length(caps).fill_null(0))
    owner = np.repeat(ids, lengths).tolist()
    text = pc.list_flatten(caps).to_pylist()
    return [{"id": i + 1, "image_id": o, "caption": t} for i, (o, t) in enumerate(zip(owner, text))]


def export_coco(dataset: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``out/instances.json`` and ``out/captions.json``; returns the instances path."""
    ds = load(dataset)
    out = Path(out)
    with claim_output(out, kind=KIND, inputs=ds.input_paths(), overwrite=overwrite):
        rec = ds.records
        ids, kept_ids = coco_image_ids(
            rec.column("image_id").to_pylist(), rec.column("source").to_pylist()
        )
        groups, kept_ann_ids = _groups(ds)
        used = pa.concat_arrays([g[0].category for g in groups])
        names, cat_ids = category_table(ds, used)
        enc = msgspec.json.Encoder()
        info = {
            "description": f"exported by groundset from {ds.path}",
            "groundset_sources": _sources(ds, out),
            "groundset_annotation_ids": "source" if kept_ann_ids else "renumbered",
        }
        categories = [
            {"id": i, "name": n, "supercategory": _supercategory(ds, n)}
            for n, i in zip(names, cat_ids)
        ]
        head = (
            b'{"info":'
            + enc.encode(info)
            + b',"licenses":'
            + enc.encode(_licenses(ds))
            + b',"images":'
            + enc.encode(_images(ds, ids, kept_ids, several=len(ds.sources) > 1))
        )

        with atomic_output_dir(out, kind=KIND) as tmp:
            with open(tmp / INSTANCES, "wb") as f:
                f.write(head + b',"annotations":')
                _write_annotations(f, groups, ids, names, cat_ids)
                f.write(b',"categories":' + enc.encode(categories) + b"}\n")
            with open(tmp / CAPTIONS, "wb") as f:
                f.write(head + b',"annotations":' + enc.encode(_captions(ds, ids)) + b"}\n")
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
