"""The hand-written baseline ``bench/audit.py`` times against ``groundset audit``.

What a user would write in an afternoon: read the records parts with pyarrow, take the
box centres as flat NumPy arrays, loop over images computing the Clark-Evans ratio with
one ``scipy.spatial.cKDTree`` per image, write a Parquet file. It is run as a process, so
its imports, read and write count exactly as ``groundset audit``'s do.

Usage: ``python bench/audit_baseline.py DATASET_DIR OUT.parquet``
"""

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.spatial import cKDTree


def main(dataset: str, out: str) -> None:
    parts = sorted((Path(dataset) / "records").glob("part-*.parquet"))
    table = pa.concat_tables(pq.read_table(p, columns=["image_id", "boxes"]) for p in parts)
    boxes = table.column("boxes").combine_chunks()
    off = np.asarray(boxes.offsets, np.int64)
    flat = pc.list_flatten(boxes)
    x0, y0, x1, y1 = (
        flat.field(k).to_numpy(zero_copy_only=False) for k in ("x0", "y0", "x1", "y1")
    )
    ratio = clark_evans_ratios(off, (x0 + x1) / 2, (y0 + y1) / 2)
    pq.write_table(pa.table({"image_id": table.column("image_id"), "clark_evans": ratio}), out)


def clark_evans_ratios(offsets: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Per image, the edge-corrected Clark-Evans ratio: one cKDTree per image."""
    ratio = np.full(len(offsets) - 1, np.nan)
    for k in range(len(offsets) - 1):
        a, b = offsets[k], offsets[k + 1]
        n = b - a
        if n < 2:
            continue
        pts = np.column_stack([cx[a:b], cy[a:b]])
        d, _ = cKDTree(pts).query(pts, k=2)
        expected = 0.5 / np.sqrt(n) + (0.0514 + 0.041 / np.sqrt(n)) * 4 / n
        ratio[k] = d[:, 1].mean() / expected
    return ratio


if __name__ == "__main__":
    main(*sys.argv[1:3])
