"""The curate stage: merge dataset directories into one GLIGEN-ready training set.

Sources labelled separately (COCO ingest, YOLO pseudo-labels, detector runs) overlap:
the same photo can arrive twice, and detectors emit many tiny boxes GLIGEN would throw
away at load time anyway. Curate makes those decisions once, on disk, with every
dropped image and box counted by reason, so the audit and the trainer see exactly the
data a GLIGEN run would use:

1. merge the inputs' ``sources`` (an images root per source name; a name bound to two
   different roots is refused, because the records would silently point at the wrong
   pictures);
2. drop exact duplicate images (same file content, or same source + file when the
   pixels are not at hand) and repeated image ids, keeping the first occurrence;
3. apply GLIGEN's box filters: boxes under ``min_box_area`` of the image are dropped,
   then only the ``max_boxes`` largest boxes of an image are kept;
4. assign a train/val split from a keyed hash of ``image_id``, so the split of an image
   never changes when other images are added or removed, on any machine.

All box work is columnar (flattened Arrow lists and NumPy), with no loop per box.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core import defaults
from pipeline.core.dataset import Dataset, check_kept_counts, input_entry, read_manifest, read_part
from pipeline.core.dataset_writer import dataset_writer
from pipeline.core.errors import UserError
from pipeline.core.outputs import claim_output
from pipeline.core.records import (
    BOX,
    IMAGE,
    PARENT_IMAGE_REJECTED,
    empty_rejects,
    flatten_boxes,
    reject_rows,
)
from pipeline.stages.curate_index import (
    check_unique_within,
    dedupe_keys,
    duplicates,
    index_part,
)
from pipeline.stages.parts import check_scheduler, map_parts, parts_of

STAGE = "curate"
DUPLICATE_IMAGE = "duplicate_image"
DUPLICATE_IMAGE_ID = "duplicate_image_id"
BOX_TOO_SMALL = "box_too_small"
OVER_MAX_BOXES = "over_max_boxes"
TRAIN, VAL = "train", "val"


def merge_sources(datasets: list[Dataset]) -> dict:
    """Union of the inputs' ``sources``.

    The same name bound to two different images roots is a user error: its records would
    resolve against the wrong pictures. A root known to one input and unknown (null) to
    another is compatible, and the known root wins.
    """
    merged: dict = {}
    for ds in datasets:
        for name, meta in ds.sources.items():
            root = meta.get("images_root")
            if name not in merged:
                merged[name] = dict(meta)
                continue
            have = merged[name].get("images_root")
            if have is not None and root is not None and have != root:
                raise UserError(
                    f"source {name!r} has two images roots: {have!r} and {root!r} (in {ds.path}); "
                    "re-ingest one of them under another --source name"
                )
            if have is None and root is not None:
                merged[name]["images_root"] = root
    return merged


def first_occurrence(keys) -> np.ndarray:
    """Boolean mask: True where the key has not been seen in an earlier row."""
    arr = keys if isinstance(keys, pa.Array) else pa.array(keys, pa.string())
    _, first = np.unique(np.asarray(pc.dictionary_encode(arr).indices), return_index=True)
    mask = np.zeros(len(arr), dtype=bool)
    mask[first] = True
    return mask


def _first_holder(keys, mask: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """For every row, the image_id of the first row with the same key (for reject details)."""
    codes = np.asarray(pc.dictionary_encode(keys).indices)
    holder = np.empty(codes.max() + 1 if codes.size else 0, dtype=object)
    first_rows = np.flatnonzero(mask)
    holder[codes[first_rows]] = ids[first_rows]
    return holder[codes]


def split_of(image_ids, val_fraction: float, seed: int = defaults.SPLIT_SEED) -> np.ndarray:
    """Deterministic train/val assignment from a keyed blake2b of each image_id.

    The 64-bit digest, read as a fraction of 2**64, is uniform in [0, 1); an image is
    ``val`` when it falls under ``val_fraction``. It depends only on the id and the
    seed, so it is stable across runs, machines and dataset growth.
    """
    key = int(seed).to_bytes(8, "little", signed=True)
    digests = b"".join(
        hashlib.blake2b(i.encode("utf-8"), digest_size=8, key=key).digest() for i in image_ids
    )
    u = np.frombuffer(digests, dtype="<u8").astype(np.float64) / 2.0**64
    return np.where(u < val_fraction, VAL, TRAIN)


REASONS = np.array([None, BOX_TOO_SMALL, OVER_MAX_BOXES], dtype=object)  # by code 0, 1, 2


def filter_boxes(boxes: pa.ListArray, min_box_area: float, max_boxes: int):
    """GLIGEN's per-image box filters, columnar.

    Returns ``(kept list array, flat reason code, parent image index, index within the
    image)`` over the flattened boxes, codes indexing ``REASONS`` (0 = kept). Boxes keep
    their original order; ties in area go to the earlier box, so results are deterministic.
    """
    fb = flatten_boxes(boxes)
    flat, parent, within = fb.fields, fb.image, fb.index
    x0, y0, x1, y1 = fb.coords()
    area = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)

    code = np.zeros(parent.size, dtype=np.int8)
    small = area < min_box_area
    code[small] = 1
    # Rank the surviving boxes of each image by area, largest first. lexsort is stable,
    # and the rows are in (image, box) order, so equal areas keep their box order.
    big = np.flatnonzero(~small)
    order = big[np.lexsort((-area[big], parent[big]))]
    sorted_parent = parent[order]
    rank = np.arange(order.size) - np.searchsorted(sorted_parent, sorted_parent, side="left")
    code[order[rank >= max_boxes]] = 2

    keep = code == 0
    counts = np.bincount(parent[keep], minlength=len(boxes))
    new_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    kept = pa.ListArray.from_arrays(pa.array(new_offsets), flat.filter(pa.array(keep)))
    return kept, code, parent, within


def _reject_rows(records: pa.Table, rows: np.ndarray, kind: str, reasons, box_index, detail):
    take = pa.array(rows, pa.int64())
    return reject_rows(
        stage=STAGE,
        source=records.column("source").take(take),
        kind=kind,
        image_id=records.column("image_id").take(take),
        file=records.column("file").take(take),
        box_index=box_index,
        reason=reasons,
        detail=detail,
    )


def _parent_rejects(records: pa.Table, rows_mask: np.ndarray) -> pa.Table:
    """``parent_image_rejected`` rows for every box of the images in ``rows_mask``."""
    lists = records.column("boxes").combine_chunks()
    lengths = np.asarray(pc.list_value_length(lists).fill_null(0), dtype=np.int64)
    lengths = np.where(rows_mask, lengths, 0)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)])[:-1]
    within = np.arange(owner.size) - starts[owner]
    return _reject_rows(
        records, owner, BOX, pa.repeat(pa.scalar(PARENT_IMAGE_REJECTED), owner.size), within, None
    )


def curate_records(
    records: pa.Table,
    sources: dict,
    *,
    min_box_area: float = defaults.MIN_BOX_AREA,
    max_boxes: int = defaults.MAX_BOXES,
    val_fraction: float = defaults.VAL_FRACTION,
    seed: int = defaults.SPLIT_SEED,
    hash_images: bool = True,
) -> tuple[pa.Table, pa.Table]:
    """Deduplicate, filter and split merged records in memory; return ``(records, rejects)``.

    ``curate`` gives the same records and rejects part by part (``curate_index`` finds
    the duplicates from a compact index of the whole input, ``apply_part`` does the rest).
    """
    records = records.combine_chunks()
    ids = np.asarray(records.column("image_id").to_pylist(), dtype=object)
    keys = (
        pa.array(dedupe_keys(records, sources), pa.string())
        if hash_images
        else pc.binary_join_element_wise(
            "file:",
            records.column("source").combine_chunks(),
            "\x00",
            records.column("file").combine_chunks(),
            "",
        )
    )
    unique_content = first_occurrence(keys)
    # Among content-unique rows, an image_id seen before still collides downstream
    # (splits, exports key on it), so the later row goes too.
    content_rows = np.flatnonzero(unique_content)
    dup_id = np.zeros(len(ids), dtype=bool)
    dup_id[content_rows] = ~first_occurrence(ids[content_rows])
    holder = _first_holder(keys, unique_content, ids)
    knobs = (min_box_area, max_boxes, val_fraction, seed)
    return apply_part(records, ~unique_content, dup_id, holder, *knobs)


def apply_part(
    records: pa.Table,
    dup_content: np.ndarray,
    dup_id: np.ndarray,
    holder,
    min_box_area: float,
    max_boxes: int,
    val_fraction: float,
    seed: int,
) -> tuple[pa.Table, pa.Table]:
    """Curate some rows whose duplicates are already known: ``dup_content`` and
    ``dup_id`` mark the rows to drop, ``holder[r]`` is the image_id of the row that row
    ``r`` duplicates (read where ``dup_content``). Returns ``(kept records, rejects)``."""
    ids = records.column("image_id")
    keep = ~(dup_content | dup_id)
    dup_rows = np.flatnonzero(~keep)
    img_reasons = np.where(dup_content[dup_rows], DUPLICATE_IMAGE, DUPLICATE_IMAGE_ID)
    img_detail = [
        f"same image as {holder[r]}" if dup_content[r] else f"image_id repeated: {ids[r].as_py()}"
        for r in dup_rows.tolist()
    ]
    rejects = [
        _reject_rows(records, dup_rows, IMAGE, img_reasons, [-1] * len(dup_rows), img_detail),
        _parent_rejects(records, ~keep),
    ]

    kept = records.filter(pa.array(keep))
    boxes, code, parent, within = filter_boxes(
        kept.column("boxes").combine_chunks(), min_box_area, max_boxes
    )
    dropped = np.flatnonzero(code)
    reasons = pa.DictionaryArray.from_arrays(pa.array(code[dropped]), pa.array(REASONS))
    rejects.append(
        _reject_rows(kept, parent[dropped], BOX, reasons.dictionary_decode(), within[dropped], None)
    )
    split = split_of(kept.column("image_id").to_pylist(), val_fraction, seed)
    kept = kept.set_column(kept.schema.get_field_index("boxes"), "boxes", boxes)
    kept = kept.set_column(kept.schema.get_field_index("split"), "split", pa.array(split))
    return kept, pa.concat_tables(rejects)


def _check_params(min_box_area: float, max_boxes: int, val_fraction: float) -> None:
    if not 0.0 <= min_box_area < 1.0:
        raise UserError(f"--min-box-area must be in [0, 1), got {min_box_area}")
    if max_boxes < 1:
        raise UserError(f"--max-boxes must be at least 1, got {max_boxes}")
    if not 0.0 <= val_fraction <= 1.0:
        raise UserError(f"--val-fraction must be in [0, 1], got {val_fraction}")


def curate(
    inputs: list[str | Path],
    out: str | Path,
    *,
    min_box_area: float = defaults.MIN_BOX_AREA,
    max_boxes: int = defaults.MAX_BOXES,
    val_fraction: float = defaults.VAL_FRACTION,
    seed: int = defaults.SPLIT_SEED,
    hash_images: bool = True,
    scheduler: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Curate dataset directories ``inputs`` into ``out``; return the written manifest.

    Two passes over the records parts, so memory is set by the part size and 32 bytes
    an image, not by the dataset: the first reduces every image to digests of its
    identity and id (``curate_index``; it reads the images when hashing them), the
    second curates part by part into a ``dataset_writer``. ``scheduler`` runs both
    passes' parts as dask tasks (``map_parts``). ``images_in``/``boxes_in`` are the
    inputs' kept counts: what an input rejected is accounted for in that input's own
    manifest, not again here.
    """
    if not inputs:
        raise UserError("curate needs at least one input dataset directory")
    _check_params(min_box_area, max_boxes, val_fraction)
    check_scheduler(scheduler)
    out = Path(out)
    paths = [Path(p) for p in inputs]
    datasets = [Dataset(p, pa.table({}), empty_rejects(), read_manifest(p)) for p in paths]
    with claim_output(
        out, kind=STAGE, inputs=[p for d in datasets for p in d.input_paths()], overwrite=overwrite
    ):
        sources = merge_sources(datasets)
        jobs = [(d.path, *part) for d in datasets for part in parts_of(d.path, d.manifest)]
        keys, ids, starts, boxes_in = _index(datasets, jobs, sources, hash_images, scheduler)
        dup_content, dup_id, holder = duplicates(keys, ids)
        del keys, ids
        holder_ids = _holder_ids(jobs, starts, np.unique(holder[dup_content]))
        knobs = (min_box_area, max_boxes, val_fraction, seed)
        args = []
        for (path, part, rows), s, e in zip(jobs, starts[:-1], starts[1:]):
            held = {r - s: holder_ids[holder[r]] for r in np.flatnonzero(dup_content[s:e]) + s}
            args.append((path, part, rows, dup_content[s:e], dup_id[s:e], held, *knobs))
        params = {
            "min_box_area": min_box_area,
            "max_boxes": max_boxes,
            "val_fraction": val_fraction,
            "seed": seed,
            "dedupe": "sha256" if hash_images else "source+file",
        }
        splits: dict = {}
        with dataset_writer(
            out, stage=STAGE, inputs=[input_entry(p) for p in paths], params=params, sources=sources
        ) as writer:
            for kept, rejects in map_parts(_curate_part, args, scheduler):
                writer.add(kept, rejects)
                for d in pc.value_counts(kept.column("split")).to_pylist() if len(kept) else []:
                    splits[d["values"]] = splits.get(d["values"], 0) + d["counts"]
                del kept, rejects
            manifest = writer.finish(
                int(starts[-1]), boxes_in, extra={"splits": dict(sorted(splits.items()))}
            )
        return {**manifest, "sources": sources}  # as read_dataset gives it: absolute roots


def _index(datasets, jobs, sources, hash_images, scheduler):
    """Pass 1: the digests of every image, checked per input as ``read_records`` would
    (unique image ids, the manifest's counts); ``starts`` are the jobs' first rows."""
    args = [(path, part, rows, sources, hash_images) for path, part, rows in jobs]
    found = list(map_parts(index_part, args, scheduler))
    starts = np.cumsum([0] + [k.shape[0] for k, _, _ in found])
    for d in datasets:
        mine = [k for k, job in enumerate(jobs) if job[0] == d.path]
        local = [(jobs[k][1], jobs[k][2]) for k in mine]
        first = np.cumsum([0] + [found[k][0].shape[0] for k in mine])
        ids = np.concatenate([found[k][1] for k in mine]) if mine else np.zeros((0, 2), "<u8")
        check_unique_within(d.path, ids, local, list(first))
        check_kept_counts(d.path, d.manifest, int(first[-1]), sum(found[k][2] for k in mine))
    empty = np.zeros((0, 2), "<u8")
    keys = np.concatenate([k for k, _, _ in found]) if found else empty
    ids = np.concatenate([i for _, i, _ in found]) if found else empty
    return keys, ids, starts, sum(b for _, _, b in found)


def _holder_ids(jobs, starts, rows: np.ndarray) -> dict:
    """The image_ids of the given global rows (the images others repeat), read back from
    their parts' ``image_id`` column only."""
    out = {}
    for (path, part, n), s, e in zip(jobs, starts[:-1], starts[1:]):
        mine = rows[(rows >= s) & (rows < e)]
        if mine.size:
            col = read_part(path, part, ["image_id"], n).column("image_id")
            taken = col.take(pa.array(mine - s, pa.int64())).to_pylist()
            out.update(zip(mine.tolist(), taken))
    return out


def _curate_part(path, part, rows, dup_content, dup_id, held, *knobs):
    """Pass 2 for one records part (a dask task): ``(kept records, rejects)``."""
    records = read_part(path, part, None, rows)
    return apply_part(records, dup_content, dup_id, held, *knobs)
