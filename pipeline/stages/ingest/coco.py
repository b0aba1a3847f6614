"""Stage ``ingest coco``: a COCO instances file (+ optional captions) to a dataset directory.

Speed comes from the typed msgspec decode (``pipeline.stages.ingest.coco_json``), which never builds
the polygons; everything after it works on whole NumPy/Arrow columns. Robustness comes
from validating those columns instead of trusting the file: each bad image or box gets a
reject row with a reason, so the manifest's accounting identities hold exactly and one
bad record never costs the rest of the file.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.core import boxes as bx
from pipeline.core.columns import (
    area_column,
    flag_column,
    int_column,
    number_rows,
    size_column,
    str_column,
)
from pipeline.core.dataset import write_dataset
from pipeline.core.defaults import MAX_BOXES_PER_IMAGE
from pipeline.core.errors import UserError
from pipeline.core.hashing import sha256_bytes
from pipeline.core.limits import (
    IMAGE_TOO_LARGE,
    TOO_MANY_BOXES,
    too_large,
    too_many,
)
from pipeline.core.names import UNSAFE_FILE_NAME, unsafe_names
from pipeline.core.outputs import claim_output
from pipeline.core.progress import progress
from pipeline.core.records import BOX, PARENT_IMAGE_REJECTED, assemble
from pipeline.stages.ingest.coco_captions import join_captions
from pipeline.stages.ingest.coco_json import Instances, decode_instances
from pipeline.stages.ingest.common import (
    BAD_ANNOTATION_ID,
    BAD_IMAGE_ID,
    CROWD,
    DUPLICATE_ANNOTATION_ID,
    DUPLICATE_IMAGE_ID,
    MISSING_OR_BAD_SIZE,
    UNKNOWN_CATEGORY_ID,
    UNKNOWN_IMAGE_ID,
    RejectLog,
    check_source,
    first_occurrence,
    images_root_entry,
    lookup,
    mapped_input,
)

STAGE = "ingest-coco"
IMAGE_MISSING = "image_missing"
ORIGIN = "coco"


def default_source(instances: str | Path) -> str:
    """``instances_val2017.json`` -> ``coco-val2017``; any other file name -> its stem."""
    stem = Path(instances).stem
    return (
        "coco-" + stem[len("instances_") :]
        if stem.startswith("instances_") and len(stem) > 10
        else stem
    )


def _categories(cats: list, name: str) -> tuple[np.ndarray, pa.Array, list]:
    """Sorted category ids, their names, and the category list for the manifest.

    The categories are the file's vocabulary, not records, so a broken one is a file error.
    """
    ids, ok = int_column([c.id for c in cats])
    names, name_ok = str_column([c.name for c in cats])
    bad = np.flatnonzero(~ok | ~name_ok | (np.array([n == "" for n in names], bool)))
    if bad.size:
        c = cats[bad[0]]
        raise UserError(f"{name}: category {c.id!r} needs an integer id and a non-empty name")
    dup = first_occurrence(ids, ok)[2]
    if dup.any():
        raise UserError(f"{name}: category id {int(ids[np.flatnonzero(dup)[0]])} appears twice")
    order = np.argsort(ids, kind="stable")
    meta = [
        {"id": int(ids[i]), "name": names[i], "supercategory": cats[i].supercategory} for i in order
    ]
    return ids[order], pa.array([names[i] for i in order], pa.string()), meta


def _images(images: list, source: str):
    """Validate image columns; returns columns plus a reason (None = kept) per image."""
    n = len(images)
    raw_ids = [im.id for im in images]
    ids, id_ok = int_column(raw_ids)
    files = [im.file_name for im in images]
    width, w_ok = size_column([im.width for im in images])
    height, h_ok = size_column([im.height for im in images])
    lic = [im.license for im in images]
    license_ = (
        lic
        if set(map(type, lic)) <= {str}
        else ["" if v is None else str(v) if type(v) in (int, str) else "" for v in lic]
    )
    uniq, first, dup = first_occurrence(ids, id_ok)
    unsafe = unsafe_names(files)

    reason = np.full(n, None, object)
    detail = [None] * n
    for mask, why in (
        (too_large(width, height), IMAGE_TOO_LARGE),
        (~w_ok | ~h_ok, MISSING_OR_BAD_SIZE),
        (unsafe, UNSAFE_FILE_NAME),
        (dup, DUPLICATE_IMAGE_ID),
        (~id_ok, BAD_IMAGE_ID),
    ):
        reason[mask] = why  # later assignments win: the most basic fault is reported
    for i in np.flatnonzero(reason != None):  # rejected images only
        im = images[i]
        detail[i] = (
            f"id {im.id!r} file_name {im.file_name!r} width {im.width!r} height {im.height!r}"
        )[:300]
    image_id = [f"{source}:{v}" for v in raw_ids]
    files = [f if type(f) is str else repr(f) for f in files]
    return {
        "ids": ids,
        "uniq": uniq,
        "first": first,
        "image_id": image_id,
        "file": files,
        "width": width,
        "height": height,
        "license": license_,
        "reason": reason,
        "detail": detail,
    }


def _reject_missing_files(img: dict, root: str) -> None:
    """With an images root, an image whose file is not there is rejected now, not found
    missing at export time (one stat per image; the pixels are not read)."""
    for i in np.flatnonzero(img["reason"] == None):  # images still kept
        if not os.path.isfile(os.path.join(root, img["file"][i])):
            img["reason"][i] = IMAGE_MISSING
            img["detail"][i] = f"{img['file'][i]!r} is not under {root}"[:300]


def _owners(anns: list, img: dict, trusted: bool):
    """Each annotation's ``image_id`` as written and the row of its image (-1: none)."""
    raw_img = [a.image_id for a in anns]
    img_ids, img_ok = int_column(raw_img, trusted)
    pos = np.where(img_ok, lookup(img["uniq"], img_ids), -1)
    return raw_img, np.where(pos >= 0, img["first"][np.maximum(pos, 0)], -1)


def _reject_crowded(img: dict, owner: np.ndarray) -> None:
    """An image with more annotations than a stage can hold is rejected whole: keeping
    the first N would be a partial labelling that reads as complete."""
    counts = np.bincount(owner[owner >= 0], minlength=len(img["reason"]))
    for i in np.flatnonzero(too_many(counts) & (img["reason"] == None)):
        img["reason"][i] = TOO_MANY_BOXES
        img["detail"][i] = f"{int(counts[i])} annotations, over the limit of {MAX_BOXES_PER_IMAGE}"


def _boxes(anns: list, img: dict, cat_ids: np.ndarray, trusted: bool, owners):
    """Validate annotations; returns box columns and a reason (None = kept) per box.

    ``trusted``: decoded by the strict Structs, so ids are ints and bboxes 4 floats.
    ``owners``: what ``_owners`` gave.
    """
    n = len(anns)
    raw_ann = [a.id for a in anns]
    ann_ids, ann_id_ok = int_column(raw_ann, trusted)
    raw_img, owner = owners
    raw_cat = [a.category_id for a in anns]
    cat, cat_ok = int_column(raw_cat, trusted)
    raw_bbox = [a.bbox for a in anns]
    xywh, num_ok = number_rows(raw_bbox, 4, trusted)
    crowd = flag_column([a.iscrowd for a in anns])
    area = area_column([a.area for a in anns])

    cat_idx = np.where(cat_ok, lookup(cat_ids, cat), -1)
    _, _, dup = first_occurrence(ann_ids, ann_id_ok)
    has = owner >= 0
    W, H, parent_bad = np.ones(n), np.ones(n), np.zeros(n, bool)
    W[has], H[has] = img["width"][owner[has]], img["height"][owner[has]]
    parent_bad[has] = img["reason"][owner[has]] != None
    x0, y0, x1, y1 = bx.xywh_to_xyxy(*xywh.T)
    xyxy, geo = bx.clip_xyxy_pixels(x0, y0, x1, y1, W, H)
    with np.errstate(invalid="ignore"):
        geo[num_ok & ((xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)) & (geo == None)] = bx.ZERO_AREA
    geo_ok = geo == None

    reason = geo
    reason[crowd] = CROWD
    reason[~num_ok] = bx.NON_NUMERIC
    reason[cat_idx < 0] = UNKNOWN_CATEGORY_ID
    reason[dup] = DUPLICATE_ANNOTATION_ID
    reason[~ann_id_ok] = BAD_ANNOTATION_ID
    reason[parent_bad] = PARENT_IMAGE_REJECTED
    reason[owner < 0] = UNKNOWN_IMAGE_ID
    return {
        "n": n,
        # crowd annotations that are sound but for being crowd: kept as ignore regions
        "crowd_kept": (reason == CROWD) & geo_ok & num_ok,
        "area": area,
        "ann_id": ann_ids,
        "owner": owner,
        "cat_idx": cat_idx,
        "xyxy": xyxy,
        "reason": reason,
        "raw_img": raw_img,
        "raw_cat": raw_cat,
        "ann_ids": raw_ann,  # as written, for reject details
        "bbox": raw_bbox,
    }


def _box_columns(box: dict, keep: np.ndarray, new_pos: np.ndarray, cat_names: pa.Array) -> dict:
    """The ``assemble`` box columns of the annotations in ``keep``, with the source's
    ``area`` and annotation id (so ``export coco`` gives them back)."""
    rows = np.flatnonzero(keep)
    # Group boxes by image here (file order kept within an image) so that the names are
    # gathered once, already in record order.
    rows = rows[np.argsort(box["owner"][rows], kind="stable")]
    names = cat_names.take(pa.array(box["cat_idx"][rows]))
    xyxy = box["xyxy"][rows]
    area = box["area"][rows]
    return {
        "image_index": new_pos[box["owner"][rows]],
        "phrase": names,
        "category": names,
        "x0": xyxy[:, 0],
        "y0": xyxy[:, 1],
        "x1": xyxy[:, 2],
        "y1": xyxy[:, 3],
        "score": np.ones(rows.size, np.float32),
        "origin": pa.repeat(ORIGIN, rows.size),
        "area": pa.array(area, pa.float64(), mask=np.isnan(area)),
        "ann_id": box["ann_id"][rows],
    }


def _box_rejects(log: RejectLog, box: dict, img: dict, source: str) -> None:
    reason = box["reason"]
    idx = np.flatnonzero(reason != None)
    if idx.size == 0:
        return
    owner = box["owner"][idx]
    image_id = [
        img["image_id"][o] if o >= 0 else f"{source}:{box['raw_img'][i]}"
        for o, i in zip(owner.tolist(), idx.tolist())
    ]
    files = [img["file"][o] if o >= 0 else None for o in owner.tolist()]
    why = reason[idx]
    detail = []
    for i, r in zip(idx.tolist(), why.tolist()):  # rejected boxes only
        d = f"annotation id {box['ann_ids'][i]!r}"
        if r == CROWD and box["crowd_kept"][i]:
            d += ", kept as an ignore region in the record's crowd column"
        elif r == bx.NON_NUMERIC:
            d += f", bbox {box['bbox'][i]!r}"
        elif r == UNKNOWN_CATEGORY_ID:
            d += f", category_id {box['raw_cat'][i]!r}"
        detail.append(d[:300])
    log.add(BOX, why.tolist(), image_id, files, idx, detail)


def ingest_coco(
    instances, out, *, captions=None, images_root=None, source=None, overwrite: bool = False
) -> dict:
    """COCO instances (+ captions) file -> dataset directory ``out``; returns the manifest."""
    with claim_output(
        out, kind=STAGE, inputs=[instances, captions, images_root], overwrite=overwrite
    ):
        instances = Path(instances)
        source = check_source(source if source is not None else default_source(instances))
        root = images_root_entry(images_root)
        bar = progress(total=5, desc="ingest coco", unit="step")
        with mapped_input(instances, "instances file") as data, ThreadPoolExecutor(1) as pool:
            bar.update()
            digest = pool.submit(sha256_bytes, data)  # hash while parsing
            doc = decode_instances(data, str(instances))
            inputs = [{"path": str(instances), "sha256": digest.result()}]
        bar.update()
        cat_ids, cat_names, cat_meta = _categories(doc.categories, str(instances))
        img = _images(doc.images, source)
        if root is not None:
            _reject_missing_files(img, root)
        trusted = isinstance(doc, Instances)
        owners = _owners(doc.annotations, img, trusted)
        _reject_crowded(img, owners[1])
        box = _boxes(doc.annotations, img, cat_ids, trusted, owners)
        licenses = _licenses(doc.licenses)
        n_images, n_boxes = len(doc.images), box["n"]
        del doc
        bar.update()

        keep_img = img["reason"] == None
        kept_rows = np.flatnonzero(keep_img)
        new_pos = np.cumsum(keep_img) - 1
        images = {k: [img[k][i] for i in kept_rows] for k in ("image_id", "file", "license")}
        images.update(
            source=[source] * kept_rows.size,
            width=img["width"][kept_rows],
            height=img["height"][kept_rows],
            split=[""] * kept_rows.size,
        )
        extra = {}
        if captions is not None:
            images["captions"], extra["captions"], entry = join_captions(
                Path(captions), img["ids"][kept_rows]
            )
            inputs.append(entry)
            if kept_rows.size and not extra["captions"]["captions_joined"]:
                raise UserError(
                    f"--captions {captions} has no caption for any of the {kept_rows.size} "
                    f"images of {instances} ({extra['captions']['captions_in']} annotations "
                    "read); give the captions_*.json of the same split"
                )
        else:
            images["captions"] = pa.array([[]] * kept_rows.size, pa.list_(pa.string()))
        boxes = _box_columns(box, box["reason"] == None, new_pos, cat_names)
        crowd = _box_columns(box, box["crowd_kept"], new_pos, cat_names)
        records = assemble(images, boxes, crowd)
        log = RejectLog(STAGE, source)
        log.add_images(img["reason"], img["image_id"], img["file"], img["detail"])
        _box_rejects(log, box, img, source)
        bar.update()
        manifest = write_dataset(
            out,
            records,
            log.table(),
            stage=STAGE,
            inputs=inputs,
            params={
                "source": source,
                "images_root": None if images_root is None else str(images_root),
                "origin": ORIGIN,
            },
            images_in=n_images,
            boxes_in=n_boxes,
            sources={
                source: {
                    "images_root": root,
                    "format": "coco",
                    "categories": cat_meta,
                    "licenses": licenses,
                }
            },
            extra=extra or None,
        )
        bar.update()
        bar.close()
        return manifest


def _licenses(licenses) -> list:
    """The file's license table, kept in the manifest so ``export coco`` can write it back."""
    if not isinstance(licenses, list):
        return []
    out = []
    for lic in licenses:
        item = {
            k: getattr(lic, k, None) if not isinstance(lic, dict) else lic.get(k)
            for k in ("id", "name", "url")
        }
        if all(v is None or isinstance(v, (int, str)) for v in item.values()):
            out.append(item)
    return out
