"""Stage ``ingest yolo``: an ultralytics images/labels layout to a dataset directory.

Two ways in: ``--images/--labels/--names`` (one folder pair) or ``--data data.yaml`` (an
ultralytics or Roboflow dataset, its train/val/test folders kept as the records' ``split``).

YOLO data arrives without sizes, so each image's header is read (never its pixels) for
the width and height the normalised boxes are scaled against later. The pairing follows
ultralytics: ``images/<rel>/<stem>.<ext>`` goes with ``labels/<rel>/<stem>.txt``, and only
such a file is a label file; an image without one is an image with no objects. Other
``.txt`` files (READMEs, labels of a different layout) are not read, but they are counted
in the manifest, and a run that keeps nothing is an error that names the likely cause:
an input that yields an empty dataset is a wrong path far more often than a real result.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa

from pipeline.core.dataset import write_dataset
from pipeline.core.defaults import MAX_BOXES_PER_IMAGE
from pipeline.core.errors import UserError
from pipeline.core.image_header import header_size
from pipeline.core.images import ImageReject, list_images
from pipeline.core.limits import TOO_MANY_BOXES, too_many
from pipeline.core.names import UNSAFE_FILE_NAME, unsafe_names
from pipeline.core.outputs import claim_output
from pipeline.core.progress import progress
from pipeline.core.records import BOX, IMAGE, PARENT_IMAGE_REJECTED, assemble
from pipeline.stages.ingest.common import (
    SHARED_LABEL_FILE,
    RejectLog,
    check_source,
    input_entry_dir,
)
from pipeline.stages.ingest.yolo_labels import (
    UNKNOWN_CLASS,
    Split,
    label_like,
    load_data,
    load_names,
    open_label,
    parse_lines,
    text_lines,
    txt_files,
)

STAGE = "ingest-yolo"
ORIGIN = "yolo"
EXAMPLES = 5  # other .txt files named in the manifest
SNIFF_FILES = 10_000  # other .txt files read to explain an empty result


def default_source(images: str | Path) -> str:
    """``coco128/images/train2017`` -> ``train2017``; ``data/images`` -> ``data``."""
    p = Path(images).resolve()
    return p.parent.name if p.name == "images" and p.parent.name else p.name


def _headers(root: Path, files: list[str]):
    """Per image (never per box): displayed size from the header, or a reject reason."""
    n = len(files)
    width, height = np.zeros(n, np.int32), np.zeros(n, np.int32)
    reason = np.full(n, None, object)
    detail: list = [None] * n
    for i, f in enumerate(progress(files, desc="ingest yolo: image headers", unit="img")):
        try:  # within the pixel limit, so int32 holds both sides
            width[i], height[i] = header_size(root / f)
        except ImageReject as e:
            reason[i], detail[i] = e.reason, e.detail
    return width, height, reason, detail


def _tally(reasons) -> str:
    return ", ".join(f"{r} {c}" for r, c in sorted(Counter(reasons).items()))


def ingest_yolo(images, labels, names, out, *, source=None, overwrite: bool = False) -> dict:
    """YOLO images + labels + data.yaml -> dataset directory ``out``; returns the manifest."""
    images, labels = Path(images), Path(labels)
    for what, p in (("--images", images), ("--labels", labels)):
        if not p.is_dir():
            raise UserError(f"{what} {p} is not a directory")
    with claim_output(out, kind=STAGE, inputs=[images, labels, names], overwrite=overwrite):
        class_names = load_names(names)
        source = check_source(source if source is not None else default_source(images))
        return _ingest(
            [Split("", images, labels)],
            images,
            class_names,
            out,
            source,
            inputs=[input_entry_dir(images), input_entry_dir(labels, contents=True), Path(names)],
            params={},
            labels_root=labels,
        )


def ingest_yolo_data(data, out, *, source=None, overwrite: bool = False) -> dict:
    """An ultralytics/Roboflow ``data.yaml`` -> dataset directory ``out``; returns the manifest.

    The records' ``image_id`` and ``file`` are relative to the common folder of the
    dataset root and the split folders, so ``train/images/x`` and ``valid/images/x`` stay
    apart. The default source name is the dataset root's folder name.
    """
    root, splits, class_names = load_data(data)
    folders = [p for s in splits for p in (s.images, s.labels)]
    with claim_output(out, kind=STAGE, inputs=[data, *folders], overwrite=overwrite):
        images_root = Path(os.path.commonpath([root, *(s.images for s in splits)]))
        source = check_source(source if source is not None else root.name)
        labels_root = Path(os.path.commonpath([s.labels for s in splits]))
        entries = [input_entry_dir(s.images) for s in splits]
        entries += [input_entry_dir(s.labels, contents=True) for s in splits]
        return _ingest(
            splits,
            images_root,
            class_names,
            out,
            source,
            inputs=[*entries, Path(data)],
            params={"data": str(data)},
            labels_root=labels_root,
        )


def _list(splits: list[Split], root: Path, source: str, log: RejectLog):
    """Images of every split, relative to ``root``; listing rejects go straight to ``log``.

    Returns the files, each one's split index and label path relative to its split's
    labels folder, and the reasons of the files the listing rejected.
    """
    files, split_idx, label_rel, rejected = [], [], [], []
    for k, sp in enumerate(splits):
        listing = list_images(sp.images)
        prefix = PurePosixPath(sp.images.relative_to(root).as_posix())
        for rel, why, detail in listing.rejects:
            f = prefix / rel
            log.add(IMAGE, why, [f"{source}:{f.with_suffix('')}"], [f.as_posix()], None, [detail])
        rejected += [why for _, why, _ in listing.rejects]
        files += [(prefix / rel).as_posix() for rel in listing.files]
        split_idx += [k] * len(listing.files)
        label_rel += [PurePosixPath(rel).with_suffix(".txt").as_posix() for rel in listing.files]
    return files, np.array(split_idx, np.int64), label_rel, rejected


def _read_labels(splits, owners, split_idx, label_rel, reason, detail):
    """Lines of the label file of each owning image, with owner and line number.

    A label file that must not or cannot be read rejects its image (its boxes are
    unknown, so keeping the image as a background would teach "nothing here").
    Returns the lines, owners, line numbers and per-split (read, rejected) file counts.
    """
    real = [Path(os.path.realpath(s.labels)) for s in splits]
    lines: list[str] = []
    owner: list[int] = []
    line_no: list[int] = []
    read = np.zeros((len(splits), 2), np.int64)
    for i in progress(owners.tolist(), desc="ingest yolo: labels", unit="img"):
        k = split_idx[i]
        data, why, why_detail = open_label(splits[k].labels / label_rel[i], real[k])
        if why is not None:
            read[k, 1] += 1
            if reason[i] is None:
                reason[i], detail[i] = why, why_detail
        elif data is not None:
            read[k, 0] += 1
            got = text_lines(data)
            lines += got
            owner += [i] * len(got)
            line_no += range(len(got))
    return lines, np.array(owner, np.int64), np.array(line_no, np.int64), read


def _other_txt(splits, split_idx, label_rel) -> list[list[str]]:
    """Per split, the ``.txt`` files under its labels folder that pair with no image."""
    out = []
    for k, sp in enumerate(splits):
        expected = {label_rel[i] for i in np.flatnonzero(split_idx == k)}
        out.append([t for t in txt_files(sp.labels) if t not in expected])
    return out


def _explain_no_boxes(splits, other: list[list[str]], lines, box_reason) -> None:
    """Raise for a run that would keep images but not one box of label-like input."""
    if lines:
        bad = box_reason[box_reason != None].tolist()
        hint = " Do the class ids of the labels match the data.yaml names?"
        raise UserError(
            f"0 of {len(lines)} boxes kept ({_tally(bad)}); nothing written."
            + (hint if UNKNOWN_CLASS in bad else "")
        )
    real = [Path(os.path.realpath(s.labels)) for s in splits]
    found, where = 0, None
    for k, sp in enumerate(splits):
        for rel in other[k][:SNIFF_FILES]:
            data = open_label(sp.labels / rel, real[k])[0]
            n = label_like(text_lines(data)) if data else 0
            if n and where is None:
                where = (sp, rel)
            found += n
    if found:
        sp, rel = where
        raise UserError(
            f"0 of {found} boxes kept: no label file matches an image stem under {sp.labels} "
            f"(e.g. {rel} has label lines but there is no image {sp.images}/"
            f"{PurePosixPath(rel).with_suffix('')}.*); "
            f"is {sp.labels} the labels folder of the images in {sp.images}?"
        )


def _ingest(splits, root, class_names, out, source, *, inputs, params, labels_root) -> dict:
    """The work of both forms, over image folders ``splits`` under the images ``root``."""
    class_ids = np.array(sorted(class_names), np.int64)
    name_arr = pa.array([class_names[int(i)] for i in class_ids], pa.string())
    log = RejectLog(STAGE, source)
    files, split_idx, label_rel, listed_bad = _list(splits, root, source, log)
    stems = [PurePosixPath(f).with_suffix("").as_posix() for f in files]
    images_in = len(files) + len(listed_bad)
    if images_in == 0:
        where = ", ".join(str(s.images) for s in splits)
        raise UserError(f"no images under {where}; nothing to ingest")

    n = len(files)
    width, height, reason, detail = _headers(root, files)
    first: dict[str, int] = {}
    dup = np.zeros(n, bool)
    for i, s in enumerate(stems):  # x.jpg and x.png share x.txt: the first one owns it
        j = first.setdefault(s, i)
        if j != i:
            dup[i], detail[i] = True, f"{files[j]} already pairs with the label file"
    reason[dup] = SHARED_LABEL_FILE
    reason[unsafe_names(files)] = UNSAFE_FILE_NAME
    lines, owner_arr, line_no, read = _read_labels(
        splits, np.flatnonzero(~dup), split_idx, label_rel, reason, detail
    )
    per_image = np.bincount(owner_arr, minlength=n) if owner_arr.size else np.zeros(n, np.int64)
    for i in np.flatnonzero(too_many(per_image) & (reason == None)):  # rejected whole
        reason[i] = TOO_MANY_BOXES
        detail[i] = f"{int(per_image[i])} label lines, over the limit of {MAX_BOXES_PER_IMAGE}"
    # The same rule as label: the file as it sits under the images root, suffix included.
    image_ids = [f"{source}:{f}" for f in files]
    log.add_images(reason, image_ids, files, detail)
    kept = np.flatnonzero(reason == None)  # object array: elementwise
    if kept.size == 0:
        rejected = reason[reason != None].tolist()
        counts = _tally(rejected + listed_bad)
        raise UserError(f"0 of {images_in} images kept ({counts}); nothing written")

    parsed = parse_lines(lines, owner_arr, class_ids)
    box_reason = parsed["reason"]
    parent = np.flatnonzero(reason[owner_arr] != None) if owner_arr.size else owner_arr
    box_reason[parent] = PARENT_IMAGE_REJECTED
    for i in parent:  # lines of rejected images only
        parsed["detail"][i] = f"line {lines[i][:200]!r}"
    bad = np.flatnonzero(box_reason != None)
    log.add(
        BOX,
        box_reason[bad].tolist(),
        [image_ids[o] for o in owner_arr[bad]],
        [files[o] for o in owner_arr[bad]],
        line_no[bad],
        parsed["detail"][bad].tolist(),
    )
    other = _other_txt(splits, split_idx, label_rel)
    keep = np.flatnonzero(box_reason == None)
    if keep.size == 0:
        _explain_no_boxes(splits, other, lines, box_reason)

    new_pos = np.full(n, -1, np.int64)
    new_pos[kept] = np.arange(kept.size)
    keep = keep[np.argsort(owner_arr[keep], kind="stable")]
    names_kept = name_arr.take(pa.array(parsed["cls"][keep]))
    xyxy = parsed["xyxy"][keep]
    split_names = np.array([s.name for s in splits], object)
    records = assemble(
        {
            "image_id": [image_ids[i] for i in kept],
            "source": [source] * kept.size,
            "file": [files[i] for i in kept],
            "width": width[kept],
            "height": height[kept],
            "split": split_names[split_idx[kept]].tolist(),
        },
        {
            "image_index": new_pos[owner_arr[keep]],
            "phrase": names_kept,
            "category": names_kept,
            "x0": xyxy[:, 0],
            "y0": xyxy[:, 1],
            "x1": xyxy[:, 2],
            "y1": xyxy[:, 3],
            "score": np.ones(keep.size, np.float32),
            "origin": pa.repeat(ORIGIN, keep.size),
        },
    )
    kept_per = np.bincount(split_idx[kept], minlength=len(splits))
    listed_per = np.bincount(split_idx, minlength=len(splits))
    abs_root = str(root.resolve())
    return write_dataset(
        out,
        records,
        log.table(),
        stage=STAGE,
        inputs=inputs,
        params={"source": source, "images_root": str(root), "origin": ORIGIN, **params},
        images_in=images_in,
        boxes_in=len(lines),
        sources={
            source: {
                "images_root": abs_root,
                "labels_root": str(labels_root.resolve()),
                "format": "yolo",
                "categories": [{"id": int(i), "name": class_names[int(i)]} for i in class_ids],
                "splits": [
                    {
                        "split": sp.name,
                        "images_dir": sp.images.relative_to(root).as_posix(),
                        "labels_dir": os.path.relpath(sp.labels, root),
                        "images_listed": int(listed_per[k]),
                        "images_kept": int(kept_per[k]),
                        "label_files_read": int(read[k, 0]),
                        "label_files_rejected": int(read[k, 1]),
                        "other_txt": len(other[k]),
                        "other_txt_examples": other[k][:EXAMPLES],
                    }
                    for k, sp in enumerate(splits)
                ],
            }
        },
    )
