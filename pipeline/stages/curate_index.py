"""Curate's global view of its inputs, kept compact so that curate streams.

De-duplication needs to see every image at once: an image is dropped when an earlier
one (in any input, any part) has the same content, or the same image_id. Holding every
record for that made curate's memory grow with the dataset. ``index_part`` reduces one
records part to 32 bytes an image, a 128-bit digest of its identity key (content hash,
or source + file) and one of its image_id; ``duplicates`` finds, from those digests
alone, which rows go and which earlier row each one repeats. Two different keys share
a 128-bit BLAKE2b digest with probability about n^2 / 2^129: 1e-24 for 20 million
images.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.dataset import BOX_COORDS, read_part
from pipeline.core.hashing import first_rows, sha256_file, string_digests
from pipeline.core.progress import progress
from pipeline.core.validate import damaged

INDEX_COLUMNS = ["image_id", "source", "file", "boxes"]


def _content_key(root: str | None, file: str) -> str | None:
    if root is None:
        return None
    path = Path(root) / file
    return "sha256:" + sha256_file(path) if path.is_file() else None


def dedupe_keys(records: pa.Table, sources: dict, workers: int = 4) -> np.ndarray:
    """One identity key per image: content hash where the file exists, else source + file.

    Hashing reads every image once; hashlib releases the GIL, so a few threads keep the
    disk busy. Keys of the two kinds carry different prefixes and never collide.
    """
    src = records.column("source").to_pylist()
    files = records.column("file").to_pylist()
    roots = [sources.get(s, {}).get("images_root") for s in src]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashed = list(
            progress(
                pool.map(_content_key, roots, files),
                total=len(files),
                desc="hashing images",
                unit="img",
            )
        )
    return np.array(
        [h if h is not None else f"file:{s}\x00{f}" for h, s, f in zip(hashed, src, files)],
        dtype=object,
    )


def index_part(
    path: Path, part: Path, rows: int | None, sources: dict, hash_images: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(key digests, image_id digests, boxes)`` of one records part (a dask task)."""
    records = read_part(path, part, INDEX_COLUMNS, rows, BOX_COORDS)
    if hash_images:
        keys = dedupe_keys(records, sources).tolist()
    else:
        src, files = records.column("source").to_pylist(), records.column("file").to_pylist()
        keys = [f"file:{s}\x00{f}" for s, f in zip(src, files)]
    boxes = int(pc.sum(pc.list_value_length(records.column("boxes"))).as_py() or 0)
    return string_digests(keys), string_digests(records.column("image_id").to_pylist()), boxes


def duplicates(keys: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dup_content, dup_id, holder row)`` over all rows, as ``curate_records`` decides
    them: a row repeating an earlier row's content goes; among the rows left, a row
    repeating an earlier image_id goes; ``holder`` is the row whose content it repeats."""
    holder = first_rows(keys)
    rows = np.arange(keys.shape[0])
    dup_content = holder != rows
    content = np.flatnonzero(~dup_content)
    dup_id = np.zeros(rows.size, bool)
    dup_id[content] = first_rows(ids[content]) != np.arange(content.size)
    return dup_content, dup_id, holder


def check_unique_within(path: Path, ids: np.ndarray, parts: list, starts: list) -> None:
    """An input dataset's image_ids are unique (what ``read_records`` checks)."""
    first = first_rows(ids)
    bad = np.flatnonzero(first != np.arange(first.size))
    if bad.size:
        row = int(bad[0])
        k = int(np.searchsorted(starts, row, side="right") - 1)
        part = read_part(path, parts[k][0], ["image_id"], parts[k][1])
        image_id = part.column("image_id")[row - starts[k]].as_py()
        where = f"records/{parts[k][0].name} row {row - starts[k]}"
        raise damaged(path, f"{where}: image_id {image_id!r} appears twice")
