"""Label stage, second half: raw pixel detections of all shards → records and rejects.

Kept apart from the driver (``pipeline/stages/label/run.py``) because it is pure table work: no
model, no files, no scheduling. Boxes are clipped and normalised with the shared
``pipeline.core.boxes`` rules, class names become phrases, captions come from the sidecar or
are composed, and every image or box that does not make it gets a rejects row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detectors.phrases import to_phrases
from pipeline.core.boxes import clip_xyxy_pixels
from pipeline.core.images import Listing
from pipeline.core.records import BOX, IMAGE, assemble, flatten_boxes, reject_rows
from pipeline.stages.label.captions import compose_captions

STAGE = "label"


def build_records(raw: pa.Table, listing: Listing, *, source, origin, mapping, sidecar):
    """Raw pixel detections → (records, rejects, boxes_in, number of composed captions)."""
    ok_mask = pc.is_null(raw.column("reason"))
    ok, bad = raw.filter(ok_mask), raw.filter(pc.invert(ok_mask))
    files = ok.column("file").to_pylist()
    image_ids = np.array([f"{source}:{f}" for f in files], dtype=object)
    width = ok.column("width").to_numpy()
    height = ok.column("height").to_numpy()

    fb = flatten_boxes(ok)
    flat, parent, box_index = fb.fields, fb.image, fb.index
    xyxy, reason = clip_xyxy_pixels(*fb.coords(dtype=None), width[parent], height[parent])
    keep = np.equal(reason, None)
    categories = np.asarray(flat.field("category").to_pylist(), dtype=object)
    phrases = to_phrases(categories[keep], mapping)

    composed = compose_captions(parent[keep], phrases, len(files))
    from_sidecar = [sidecar.get(f) for f in files]
    captions = [s if s is not None else ([c] if c else []) for s, c in zip(from_sidecar, composed)]
    n_composed = sum(s is None for s in from_sidecar)
    n_kept = int(keep.sum())
    records = assemble(
        {
            "image_id": image_ids.tolist(),
            "source": [source] * len(files),
            "file": files,
            "width": width,
            "height": height,
            "captions": captions,
        },
        {
            "image_index": parent[keep],
            "phrase": phrases,
            "category": categories[keep],
            "x0": xyxy[keep, 0],
            "y0": xyxy[keep, 1],
            "x1": xyxy[keep, 2],
            "y1": xyxy[keep, 3],
            "score": flat.field("score").to_numpy(zero_copy_only=False)[keep],
            "origin": [origin] * n_kept,
        },
    )
    rejects = _rejects(
        bad,
        listing,
        source,
        image_ids[parent[~keep]],
        np.asarray(files, dtype=object)[parent[~keep]] if files else [],
        box_index[~keep],
        reason[~keep],
    )
    return records, rejects, len(parent), n_composed


def _rejects(bad: pa.Table, listing: Listing, source, box_ids, box_files, box_index, box_reason):
    img_files = bad.column("file").to_pylist() + [f for f, _, _ in listing.rejects]
    img_reasons = bad.column("reason").to_pylist() + [r for _, r, _ in listing.rejects]
    img_details = bad.column("detail").to_pylist() + [d for _, _, d in listing.rejects]
    n_img, n_box = len(img_files), len(box_ids)
    return reject_rows(
        stage=STAGE,
        source=source,
        kind=[IMAGE] * n_img + [BOX] * n_box,
        image_id=[f"{source}:{f}" for f in img_files] + list(box_ids),
        file=img_files + list(box_files),
        box_index=[-1] * n_img + np.asarray(box_index, dtype=np.int64).tolist(),
        reason=img_reasons + list(box_reason),
        detail=img_details + [""] * n_box,
    )
