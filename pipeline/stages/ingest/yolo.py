"""Stage ``ingest yolo``: an ultralytics images/labels layout to a dataset directory.

YOLO data arrives without sizes, so each image's header is read (never its pixels) for
the width and height the normalised boxes are scaled against later. The pairing follows
ultralytics: ``images/<rel>/<stem>.<ext>`` goes with ``labels/<rel>/<stem>.txt``; an image
without a label file is an image with no objects, a label file without an image is
rejected (its lines counted as boxes of a rejected image) so nothing vanishes silently.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa

from pipeline.core.dataset import write_dataset
from pipeline.core.errors import UserError
from pipeline.core.image_header import header_size
from pipeline.core.images import ImageReject, list_images
from pipeline.core.names import UNSAFE_FILE_NAME, unsafe_names
from pipeline.core.outputs import claim_output
from pipeline.core.progress import progress
from pipeline.core.records import BOX, IMAGE, PARENT_IMAGE_REJECTED, assemble
from pipeline.stages.ingest.common import (
    DUPLICATE_IMAGE_ID,
    RejectLog,
    check_source,
    input_entry_dir,
)
from pipeline.stages.ingest.yolo_labels import load_names, parse_lines

STAGE = "ingest-yolo"
ORIGIN = "yolo"
LABEL_WITHOUT_IMAGE = "label_without_image"


def default_source(images: str | Path) -> str:
    """``coco128/images/train2017`` -> ``train2017``; ``data/images`` -> ``data``."""
    p = Path(images).resolve()
    return p.parent.name if p.name == "images" and p.parent.name else p.name


def _label_files(labels: Path) -> dict[str, Path]:
    """Label files by relative stem (``sub/x``), hidden files skipped, sorted."""
    out = {}
    for f in sorted(labels.rglob("*.txt")):
        rel = f.relative_to(labels)
        if f.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.with_suffix("").as_posix()] = f
    return out


def _read_lines(path: Path) -> list[str]:
    """Non-blank lines; a BOM is dropped and undecodable bytes become U+FFFD (-> bad line)."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    return [line for line in text.splitlines() if line.strip()]


def _headers(images: Path, files: list[str]):
    """Per image (never per box): displayed size from the header, or a reject reason."""
    n = len(files)
    width, height = np.zeros(n, np.int32), np.zeros(n, np.int32)
    reason = np.full(n, None, object)
    detail: list = [None] * n
    for i, f in enumerate(progress(files, desc="ingest yolo: image headers", unit="img")):
        try:
            width[i], height[i] = header_size(images / f)
        except ImageReject as e:
            reason[i], detail[i] = e.reason, e.detail
    return width, height, reason, detail


def _collect_lines(label_files: dict[str, Path], slot: dict[str, int]):
    """All label lines in one list, with the owning image slot and line number of each."""
    lines: list[str] = []
    owner: list[int] = []
    line_no: list[int] = []
    for s, f in progress(label_files.items(), desc="ingest yolo: labels", unit="file"):
        got = _read_lines(f)
        lines += got
        owner += [slot[s]] * len(got)
        line_no += range(len(got))
    return lines, np.array(owner, np.int64), np.array(line_no, np.int64)


def ingest_yolo(images, labels, names, out, *, source=None, overwrite: bool = False) -> dict:
    """YOLO images + labels + data.yaml -> dataset directory ``out``; returns the manifest."""
    images, labels = Path(images), Path(labels)
    for what, p in (("--images", images), ("--labels", labels)):
        if not p.is_dir():
            raise UserError(f"{what} {p} is not a directory")
    with claim_output(out, kind=STAGE, inputs=[images, labels, names], overwrite=overwrite):
        class_names = load_names(names)
        class_ids = np.array(sorted(class_names), np.int64)
        name_arr = pa.array([class_names[int(i)] for i in class_ids], pa.string())
        source = check_source(source if source is not None else default_source(images))
        log = RejectLog(STAGE, source)

        listing = list_images(images)
        for rel, why, detail in listing.rejects:
            log.add(
                IMAGE,
                why,
                [f"{source}:{PurePosixPath(rel).with_suffix('')}"],
                [rel],
                None,
                [detail],
            )
        files = listing.files
        stems = [PurePosixPath(f).with_suffix("").as_posix() for f in files]
        label_files = _label_files(labels)

        n = len(files)
        width, height, reason, detail = _headers(images, files)
        seen: set[str] = set()
        dup = np.zeros(n, bool)
        for i, s in enumerate(stems):  # x.jpg and x.png share x.txt: the first one owns it
            dup[i] = s in seen
            seen.add(s)
        reason[dup] = DUPLICATE_IMAGE_ID
        reason[unsafe_names(files)] = UNSAFE_FILE_NAME
        image_ids = [f"{source}:{s}" for s in stems]
        log.add_images(reason, image_ids, files, detail)

        # Label lines of every label file. A label file without an image gets a pseudo-image
        # slot after the real images, rejected, so its lines are counted as boxes.
        owner_of = {s: i for i, s in enumerate(stems) if not dup[i]}
        orphans = [s for s in label_files if s not in owner_of]
        slot = {**owner_of, **{s: n + k for k, s in enumerate(orphans)}}
        lines, owner_arr, line_no = _collect_lines(label_files, slot)
        all_ids = image_ids + [f"{source}:{s}" for s in orphans]
        all_files = files + [label_files[s].relative_to(labels).as_posix() for s in orphans]
        log.add(
            IMAGE,
            LABEL_WITHOUT_IMAGE,
            all_ids[n:],
            all_files[n:],
            None,
            [f"no image for label file {label_files[s]}" for s in orphans],
        )

        parsed = parse_lines(lines, owner_arr, class_ids)
        box_reason = parsed["reason"]
        image_bad = np.concatenate([reason != None, np.ones(len(orphans), bool)])
        parent = np.flatnonzero(image_bad[owner_arr]) if owner_arr.size else np.zeros(0, np.int64)
        box_reason[parent] = PARENT_IMAGE_REJECTED
        for i in parent:  # lines of rejected images only
            parsed["detail"][i] = f"line {lines[i][:200]!r}"
        bad = np.flatnonzero(box_reason != None)
        log.add(
            BOX,
            box_reason[bad].tolist(),
            [all_ids[o] for o in owner_arr[bad]],
            [all_files[o] for o in owner_arr[bad]],
            line_no[bad],
            parsed["detail"][bad].tolist(),
        )

        kept = np.flatnonzero(reason == None)
        new_pos = np.full(n + len(orphans), -1, np.int64)
        new_pos[kept] = np.arange(kept.size)
        keep = np.flatnonzero(box_reason == None)
        keep = keep[np.argsort(owner_arr[keep], kind="stable")]
        names_kept = name_arr.take(pa.array(parsed["cls"][keep]))
        xyxy = parsed["xyxy"][keep]
        records = assemble(
            {
                "image_id": [image_ids[i] for i in kept],
                "source": [source] * kept.size,
                "file": [files[i] for i in kept],
                "width": width[kept],
                "height": height[kept],
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
        root = str(images.resolve())
        return write_dataset(
            out,
            records,
            log.table(),
            stage=STAGE,
            inputs=[input_entry_dir(images), input_entry_dir(labels, contents=True), Path(names)],
            params={"source": source, "images_root": root, "origin": ORIGIN},
            images_in=n + len(listing.rejects) + len(orphans),
            boxes_in=len(lines),
            sources={
                source: {
                    "images_root": root,
                    "labels_root": str(labels.resolve()),
                    "format": "yolo",
                    "categories": [{"id": int(i), "name": class_names[int(i)]} for i in class_ids],
                }
            },
        )
