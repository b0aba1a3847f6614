"""Pieces shared by the COCO and YOLO ingest stages.

Both stages validate whole columns, end up with a reason per image and per box (``None``
for kept ones) and must account for every dropped item in ``rejects.parquet``. Keeping
the reject bookkeeping and id lookups here means the two formats cannot drift apart in
how they count.
"""

from __future__ import annotations

import mmap
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.core.errors import UserError
from pipeline.core.hashing import fingerprint
from pipeline.core.records import IMAGE, empty_rejects, reject_rows

# Image-level reject reasons (stable strings: they appear in manifests).
BAD_IMAGE_ID = "bad_image_id"
DUPLICATE_IMAGE_ID = "duplicate_image_id"
SHARED_LABEL_FILE = "shared_label_file"  # yolo: x.jpg and x.png both pair with x.txt
MISSING_OR_BAD_SIZE = "missing_or_bad_size"
# Box-level reject reasons specific to ingest (geometry reasons live in pipeline.core.boxes).
CROWD = "crowd"
UNKNOWN_IMAGE_ID = "unknown_image_id"
UNKNOWN_CATEGORY_ID = "unknown_category_id"
DUPLICATE_ANNOTATION_ID = "duplicate_annotation_id"
BAD_ANNOTATION_ID = "bad_annotation_id"


class RejectLog:
    """Collects reject rows column-wise; one ``add`` per (kind, reason group), no row loop."""

    def __init__(self, stage: str, source: str):
        self.stage, self.source = stage, source
        self.parts: list[pa.Table] = []

    def add(self, kind: str, reason, image_id, file=None, box_index=None, detail=None) -> None:
        """Add rows; ``reason`` is one string or a sequence, the others sequences or None."""
        if len(image_id):
            self.parts.append(
                reject_rows(
                    stage=self.stage,
                    source=self.source,
                    kind=kind,
                    image_id=image_id,
                    file=file,
                    box_index=box_index,
                    reason=reason,
                    detail=detail,
                )
            )

    def add_images(self, reason: np.ndarray, image_id: list, file: list, detail: list) -> None:
        """Image rejects for every position where ``reason`` (object array) is not None."""
        idx = np.flatnonzero(reason != None)  # object array: elementwise
        self.add(
            IMAGE,
            reason[idx].tolist(),
            [image_id[i] for i in idx],
            [file[i] for i in idx],
            None,
            [detail[i] for i in idx],
        )

    def table(self) -> pa.Table:
        if not self.parts:
            return empty_rejects()
        return pa.concat_tables(self.parts).combine_chunks()


def lookup(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Position of each query in ``sorted_keys`` (unique, ascending), or -1 when absent."""
    if sorted_keys.size == 0:
        return np.full(query.shape, -1, np.int64)
    pos = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.size - 1)
    return np.where(sorted_keys[pos] == query, pos, -1)


def first_occurrence(
    keys: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique sorted keys among ``valid`` rows, the row of each key's first occurrence,
    and a mask of valid rows that repeat an earlier key (the duplicates to reject)."""
    rows = np.flatnonzero(valid)
    uniq, first = np.unique(keys[rows], return_index=True)
    dup = valid.copy()
    dup[rows[first]] = False
    return uniq, rows[first], dup


def check_source(source: str) -> str:
    """Source names qualify image ids as ``<source>:<id>``, so they must be plain words."""
    if not source or any(c in source for c in ":/\\\x00") or source != source.strip():
        raise UserError(
            f"source name {source!r} is not usable: it must be non-empty, without "
            "':', '/', '\\' or surrounding spaces (pass --source NAME)"
        )
    return source


def read_input(path: str | Path, what: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} {p} does not exist or is not a file")
    try:
        return p.read_bytes()
    except OSError as e:
        raise UserError(f"{what} {p} cannot be read: {e.strerror}") from None


@contextmanager
def mapped_input(path: str | Path, what: str):
    """The file as a read-only buffer, memory-mapped so the parser reads the page cache
    directly (no 500 MB copy); an empty file maps to ``b""``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} {p} does not exist or is not a file")
    try:
        f = open(p, "rb")  # noqa: SIM115 (closed by the with block below)
    except OSError as e:
        raise UserError(f"{what} {p} cannot be read: {e.strerror}") from None
    with f:
        if p.stat().st_size == 0:
            yield b""
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            yield m


def images_root_entry(images_root: str | Path | None) -> str | None:
    """Absolute images root for the manifest's ``sources``; None when not given."""
    if images_root is None:
        return None
    root = Path(images_root)
    if not root.is_dir():
        raise UserError(f"--images-root {root} is not a directory")
    return str(root.resolve())


def input_entry_dir(path: str | Path, contents: bool = False) -> dict:
    """Manifest input entry for a folder: sha256 over its sorted listing.

    The listing holds each file's relative path and size, plus its bytes when
    ``contents`` is set (label folders: small text that decides the output). Image
    folders are listed without reading pixels, which would dominate the ingest time.
    """
    root = Path(path)
    return {
        "path": str(root),
        "sha256": fingerprint(root, by="contents" if contents else "size"),
        "hashed": "listing+contents" if contents else "listing (path, size)",
    }
