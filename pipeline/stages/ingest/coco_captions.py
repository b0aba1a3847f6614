"""COCO captions joined onto the images ``ingest coco`` kept.

A captions file is a second input with its own faults (string ids, non-string captions,
captions of other images, captions over the length limit); each is counted in the
manifest's ``captions`` block rather than failing the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.columns import int_column, str_column
from pipeline.core.hashing import sha256_bytes
from pipeline.core.limits import long_strings
from pipeline.stages.ingest.coco_json import decode_captions
from pipeline.stages.ingest.common import lookup, read_input


def join_captions(path: Path, kept_ids: np.ndarray) -> tuple[pa.Array, dict, dict]:
    """Captions per kept image, in file order; unmatched captions are counted, not kept."""
    data = read_input(path, "captions file")
    entry = {"path": str(path), "sha256": sha256_bytes(data)}
    caps = decode_captions(data, str(path)).annotations
    del data
    ids, id_ok = int_column([c.image_id for c in caps])
    text, text_ok = str_column([c.caption for c in caps])
    text = pa.array(text, pa.string())
    long = long_strings(text)
    text_ok &= ~long
    order_ids = np.argsort(kept_ids, kind="stable")
    pos = lookup(kept_ids[order_ids], ids)
    target = np.where(id_ok & text_ok & (pos >= 0), order_ids[np.maximum(pos, 0)], -1)
    use = np.flatnonzero(target >= 0)
    order = use[np.argsort(target[use], kind="stable")]
    counts = np.bincount(target[use], minlength=kept_ids.size)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    values = pc.utf8_trim_whitespace(text.take(pa.array(order)))
    stats = {
        "captions_in": len(caps),
        "captions_joined": int(use.size),
        "captions_bad": int((~(id_ok & text_ok)).sum()),  # too long included
        "captions_too_long": int(long.sum()),
        "captions_unmatched": int(((pos < 0) & id_ok & text_ok).sum()),
    }
    return pa.ListArray.from_arrays(pa.array(offsets), values), stats, entry
