"""What the three exporters share.

Each format has its own module (``coco``, ``yolo``, ``gligen_tsv``); this module holds
what they share: a flat, columnar view of the boxes, the category
table, number formatting that round-trips, and atomic output. Exports build their text
column-wise with Arrow string kernels (no Python loop per box); the loop that remains
is per image, where each image needs a file (labels, links, JPEG bytes) anyway.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core import arrow_kernels as kernels
from pipeline.core.dataset import Dataset, check_kept_counts, n_boxes, read_dataset, read_manifest
from pipeline.core.hashing import first_rows, string_digests
from pipeline.core.validate import damaged


def num_str(values) -> pa.Array:
    """Shortest decimal text that parses back to the same double (Arrow's cast)."""
    return pc.cast(pa.array(np.asarray(values)), pa.string())


def xywh_numbers(xywh: np.ndarray) -> list:
    """Each box's ``x,y,w,h`` as JSON numbers: the pieces of a ``join_cols`` row that go
    between ``[`` and ``]`` (COCO's ``bbox`` and GLIGEN's are written alike)."""
    x, y, w, h = (num_str(xywh[:, k]) for k in range(4))
    return [x, ",", y, ",", w, ",", h]


def join_cols(*parts) -> pa.Array:
    """Concatenate string columns and literal strings element-wise (no separator)."""
    return pc.binary_join_element_wise(*parts, "")


def _listed_categories(ds: Dataset) -> list:
    """Category lists the manifest carries: top level, then each source's (ingest's)."""
    lists = [ds.manifest.get("categories") or []]
    lists += [meta.get("categories") or [] for meta in ds.sources.values()]
    return [c for lst in lists if isinstance(lst, list) for c in lst]


def write_values(f, arr: pa.Array, skip_first: int = 0) -> None:
    """Write the concatenation of a string array's values straight from its Arrow
    buffer (no Python string per element); ``skip_first`` drops leading bytes."""
    arr = kernels.one_array(arr)
    if len(arr) == 0:
        return
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[
        arr.offset : arr.offset + len(arr) + 1
    ]
    f.write(memoryview(arr.buffers()[2])[int(offsets[0]) + skip_first : int(offsets[-1])])


def category_table(ds: Dataset, used: pa.Array) -> tuple[list[str], list[int]]:
    """Ordered category names and their ids.

    Categories the manifest records (names, or ``{"id", "name"}`` dicts as ingest writes
    them per source) keep their ids (listed in id order), so a re-export keeps the ids and class
    indices of the original data. A name or id met twice keeps its first binding; names
    that no list mentions follow, sorted, with fresh ids.
    """
    names: list[str] = []
    ids: list[int] = []
    for i, c in enumerate(_listed_categories(ds)):
        name = c.get("name") if isinstance(c, dict) else c
        cid = c.get("id") if isinstance(c, dict) else i + 1
        if not isinstance(name, str) or name in names:
            continue
        if isinstance(cid, int) and not isinstance(cid, bool) and cid not in ids:
            names.append(name)
            ids.append(cid)
    order = sorted(range(len(ids)), key=ids.__getitem__)
    names, ids = [names[i] for i in order], [ids[i] for i in order]
    seen = set(names)
    extra = sorted(n for n in pc.unique(used).to_pylist() if n is not None and n not in seen)
    start = max(ids, default=0) + 1
    return names + extra, ids + list(range(start, start + len(extra)))


def load(dataset: str | Path) -> Dataset:
    """Read a dataset for export (a missing or broken directory is a UserError)."""
    return read_dataset(dataset)


def load_meta(dataset: str | Path) -> Dataset:
    """A dataset's manifest without its records, for an export that reads them part by
    part (a missing or broken directory is a UserError)."""
    path = Path(dataset)
    return Dataset(path, pa.table({}), pa.table({}), read_manifest(path))


def part_index(table: pa.Table) -> dict:
    """What ``check_whole`` needs of one part: its image ids' 16-byte digests and its
    box count (a pass-1 task returns it, so the client never holds the ids)."""
    return {
        "digests": string_digests(table.column("image_id").to_pylist()),
        "boxes": n_boxes(table),
    }


def check_whole(ds: Dataset, digests: list[np.ndarray], boxes: int) -> None:
    """After a pass over every part, the whole-dataset rules of ``read_records``: unique
    image ids (on the parts' digests, in order) and the manifest's image and box counts.
    The exports check them after their first pass, before writing anything."""
    d = np.concatenate(digests) if digests else np.zeros((0, 2), "<u8")
    if (first_rows(d) != np.arange(d.shape[0])).any():
        raise damaged(ds.path, "an image_id appears twice in its records")
    check_kept_counts(ds.path, ds.manifest, d.shape[0], boxes)


def link_or_copy(src: Path, dst: Path) -> str:
    """Hard link (no space, survives moves), else symlink, else copy; returns which.

    ``src`` is resolved fully first: Linux's ``link()`` links a symlink itself, not its
    target, so an image reached through a relative symlink (``a.jpg -> ../pool/a.jpg``)
    used to become the same relative link inside the export, dangling there.
    """
    real = Path(os.path.realpath(src))
    try:
        os.link(real, dst)
        return "hardlink"
    except OSError:
        pass
    try:
        os.symlink(real, dst)
        return "symlink"
    except OSError:
        shutil.copy2(real, dst)
        return "copy"
