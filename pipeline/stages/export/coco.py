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
from itertools import pairwise
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa

from pipeline.core.atomic import atomic_output_dir
from pipeline.core.dataset import Dataset
from pipeline.core.outputs import claim_output
from pipeline.stages.export.coco_parts import (
    annotations_part,
    images_part,
    index_part,
    parse_image_ids,
)
from pipeline.stages.export.common import category_table, check_whole, load_meta
from pipeline.stages.parts import check_scheduler, map_parts, parts_of

KIND = "export-coco"
INSTANCES = "instances.json"
CAPTIONS = "captions.json"


def coco_image_ids(image_ids: list[str], sources: list[str]) -> tuple[np.ndarray, bool]:
    """COCO integer ids: the original ones when every image_id is ``<source>:<int>`` and
    they are unique (so a round trip keeps them), else 1..n in record order."""
    ids = parse_image_ids(image_ids, sources)
    if ids is not None and np.unique(ids).size == ids.size:
        return ids, True
    return np.arange(1, len(image_ids) + 1, dtype=np.int64), False


def _licenses(ds: Dataset) -> list:
    seen, out = set(), []
    for meta in ds.sources.values():
        for lic in meta.get("licenses") or []:
            if isinstance(lic, dict) and lic.get("id") not in seen:
                seen.add(lic.get("id"))
                out.append(lic)
    return out


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


def export_coco(
    dataset: str | Path, out: str | Path, *, scheduler: str | None = None, overwrite: bool = False
) -> Path:
    """Write ``out/instances.json`` and ``out/captions.json``; returns the instances path.

    Part by part, so memory is set by the part size plus 8 bytes an image and a box:
    pass 1 (``index_part``) gives the ids and categories to decide; then the images go
    to both files, then the object annotations (with the captions), then the crowd
    regions. Each pass runs one ``coco_parts`` function per part, here or as dask tasks
    (``scheduler``, ``map_parts``); this process writes their bytes in order.
    """
    check_scheduler(scheduler)
    ds = load_meta(dataset)
    out = Path(out)
    with claim_output(out, kind=KIND, inputs=ds.input_paths(), overwrite=overwrite):
        parts = [(ds.path, *p) for p in parts_of(ds.path, ds.manifest)]
        plan = _plan(ds, list(map_parts(index_part, parts, scheduler)))
        names, cat_ids = category_table(ds, pa.array(plan["used"], pa.string()))
        enc = msgspec.json.Encoder()
        info = {
            "description": f"exported by groundset from {ds.path}",
            "groundset_sources": _sources(ds, out),
            "groundset_annotation_ids": "source" if plan["ann_kept"] else "renumbered",
        }
        categories = [
            {"id": i, "name": n, "supercategory": _supercategory(ds, n)}
            for n, i in zip(names, cat_ids)
        ]
        head = b'{"info":' + enc.encode(info) + b',"licenses":' + enc.encode(_licenses(ds))
        several = len(ds.sources) > 1
        with (
            atomic_output_dir(out, kind=KIND) as tmp,
            open(tmp / INSTANCES, "wb") as fi,
            open(tmp / CAPTIONS, "wb") as fc,
        ):
            for f in (fi, fc):
                f.write(head + b',"images":[')
            images = _Joined(fi, fc)
            args = [(*p, plan["ids"][k], plan["kept_ids"], several) for k, p in enumerate(parts)]
            for text in map_parts(images_part, args, scheduler):
                images.write(text)
            for f in (fi, fc):
                f.write(b'],"annotations":[')
            ann, caps = _Joined(fi, leading_comma=True), _Joined(fc, leading_comma=True)
            for group in (0, 1):
                args = [
                    (*p, group, plan["ids"][k], plan["ann"][group][k], names, cat_ids)
                    + ((plan["caption_ids"][k] if group == 0 else None),)
                    for k, p in enumerate(parts)
                ]
                for text, captions in map_parts(annotations_part, args, scheduler):
                    ann.write(text)
                    caps.write(captions)
            fi.write(b'],"categories":' + enc.encode(categories) + b"}\n")
            fc.write(b"]}\n")
        if several:  # a summary: said even with --quiet (it hides bars only)
            print(
                f"export coco: {len(ds.sources)} sources; each image's file_name is relative "
                "to its groundset_source's images root (see info.groundset_sources)"
            )
        return out / INSTANCES


class _Joined:
    """Pieces of one JSON array written to files in order: comma-separated items
    (``leading_comma``: pieces that start with their own comma, the first one dropped)."""

    def __init__(self, *files, leading_comma: bool = False) -> None:
        self.files, self.leading, self.first = files, leading_comma, True

    def write(self, text: bytes) -> None:
        if not text:
            return
        if self.leading:
            text = text[1:] if self.first else text
        elif not self.first:
            text = b"," + text
        for f in self.files:
            f.write(text)
        self.first = False


def _plan(ds: Dataset, index: list[dict]) -> dict:
    """Every id the parts need, from pass 1's counts.

    - COCO image ids: the original ones when every image_id is ``<source>:<int>`` and
      they are unique (a round trip keeps them), else 1..N in record order;
    - each part's first annotation id per group: the source's ids when those present
      are unique, with fresh ids after the largest for boxes without one (objects, then
      crowd regions, in export order); else 1..n in export order;
    - each part's first caption id.

    It also checks what ``read_records`` checks on a whole table: unique image ids (on
    digests) and the manifest's counts.
    """
    rows = np.array([i["rows"] for i in index], np.int64)
    starts = np.concatenate([[0], np.cumsum(rows)])
    sizes = np.array([i["sizes"] for i in index], np.int64).reshape(-1, 2)
    check_whole(ds, [i["digests"] for i in index], int(sizes[:, 0].sum()))
    parsed = [i["parsed"] for i in index]
    ids = np.concatenate(parsed) if parsed and all(p is not None for p in parsed) else None
    kept_ids = ids is not None and np.unique(ids).size == ids.size
    if not kept_ids:
        ids = np.arange(1, int(starts[-1]) + 1, dtype=np.int64)
    present = [p for i in index for p in i["present"]]
    given = np.concatenate(present) if present else np.zeros(0, np.int64)
    ann_kept = bool(np.unique(given).size == given.size)
    if ann_kept:  # fresh ids count only the boxes without one
        per_part = np.array([i["nulls"] for i in index], np.int64).reshape(-1, 2)
        base, mode = int(max(given.max(initial=0), 0)) + 1, "source"
    else:
        per_part, base, mode = sizes, 1, "renumber"
    objects = base + np.concatenate([[0], np.cumsum(per_part[:, 0])])
    crowd = objects[-1] + np.concatenate([[0], np.cumsum(per_part[:, 1])])
    captions = 1 + np.concatenate([[0], np.cumsum([i["captions"] for i in index])])
    return {
        "kept_ids": kept_ids,
        "ids": [ids[a:b] for a, b in pairwise(starts)],
        "ann_kept": ann_kept,
        "ann": [[(mode, int(v)) for v in objects[:-1]], [(mode, int(v)) for v in crowd[:-1]]],
        "caption_ids": [int(v) for v in captions[:-1]],
        "used": sorted(set().union(*(i["used"] for i in index))),
    }


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
