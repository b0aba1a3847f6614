"""The audit's one pass over a dataset: layout statistics part by part, the gate's columns.

``stream_stats`` reads, checks and scores one records part at a time (here, or one
dask task per part) and writes each part's statistics to ``layout_stats.parquet``;
nothing per image is kept while the parts stream past, so that memory is set by the
part size. The gate's columns (``GATE_COLUMNS``) are then read back from that file.
``pipeline.stages.audit`` gates, reports and remediates on what it returns.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.grid_score import FAMILIES
from analysis.layout_stats import layout_columns, stats_to_arrow, write_stats
from pipeline.core.arrow_env import use_jemalloc
from pipeline.core.dataset import (
    BOX_COORDS,
    check_kept_counts,
    read_manifest,
    read_part,
    row_locator,
)
from pipeline.core.heap import release_free_heap, tune_heap
from pipeline.core.progress import progress
from pipeline.core.validate import check_unique_ids, damaged
from pipeline.stages.parts import map_parts, parts_of

STATS_COLUMNS = ["image_id", "source", "file", "boxes"]  # file: the report's photos
GATE_COLUMNS = ["image_id", "source", "n_boxes", "grid_score", "low_evidence"] + [
    f"{f}_score" for f in FAMILIES
]  # all the gate, the reference, the weights and the report read of the stats


def stats_workers() -> int:
    """Threads for the layout statistics: NumPy drops the GIL in its loops."""
    return max(1, min(4, os.cpu_count() or 1))


def _part_stats(path: Path, part: Path, rows: int | None) -> pa.Table:
    """One part's stats as Arrow: what a dask task returns (Arrow pickles without copies)."""
    return stats_to_arrow(layout_columns(read_part(path, part, STATS_COLUMNS, rows, BOX_COORDS)))


def _score_parts(path, parts: list, stats_out: Path, sample, bar) -> list[int]:
    """Score the parts here, one at a time, into ``stats_out``; returns each part's row
    count.

    One pool of ``stats_workers`` threads for the whole pass runs each part's layout
    statistics, then encodes its stats Parquet (Arrow drops the GIL) while this thread
    draws the part's report sample and reads the next part: 0.1 s of a 1.1 s audit of
    250,000 images. On a thread of its own the encoding raised the 1,000,000-image peak
    to 1.32x the 250,000-image one, each thread keeping its freed memory between parts;
    on the threads that already hold the statistics' temporaries, 1.2x.

    Strictly one part in memory: reading the next part on a thread beside the scoring
    held two parts' data at once (1.47x from 250,000 to 1,000,000 images; 1.25x allowed).
    Before each read the heaps' free pages go back to the system (``pipeline.core.heap``).
    """
    from concurrent.futures import ThreadPoolExecutor, wait

    writer = written = None
    rows_done = []
    pool = ThreadPoolExecutor(stats_workers())
    try:
        for part, rows in parts:
            release_free_heap()  # the last part's freed temporaries: not under this read
            records = read_part(path, part, STATS_COLUMNS, rows, BOX_COORDS)
            if written is not None:  # the last part's encoding went on beside this read
                writer, written = written.result(), None
            cols = layout_columns(records, pool=pool)
            written = pool.submit(write_stats, stats_to_arrow(cols), stats_out, writer)
            if sample is not None:
                sample.add(records, cols["grid_score"], pool)
            rows_done.append(len(cols["grid_score"]))
            bar.update(rows_done[-1])
            del records, cols  # before the next part is read
    finally:
        if written is not None:  # the encoding ends before its file is closed
            wait([written])
            writer = writer if written.exception() else written.result()
        if writer is not None:
            writer.close()
        pool.shutdown()
    if written is not None:
        written.result()  # its error, if the last encoding failed
    return rows_done


def read_gate_columns(stats: Path) -> dict:
    """``GATE_COLUMNS`` of a finished stats file: ids and sources as Arrow (sources
    dictionary-encoded, as the gate and the report read them: codes), the rest NumPy.

    Read back instead of kept while the parts stream past: kept (about 45 bytes an
    image), they were the memory that grew with the dataset under every later part, and
    the 1,000,000-image peak was 1.25x the 250,000-image one; read back, 1.17x (whole
    audits, medians of 9, docs/audit.md). The cost: 12-15 ms for 250,000 images, read
    from the page cache the file was just written to, and the last part's encoding no
    longer runs beside the gate (whole audits 0.736 -> 0.759 s, 13 runs each)."""
    # ParquetFile, not read_table: that imports pyarrow.dataset (25 ms), which the
    # audit's path never needs (tests/commands/test_audit_imports.py)
    table = pq.ParquetFile(stats, memory_map=True, read_dictionary=["source"]).read(GATE_COLUMNS)
    return {
        k: table.column(k) if k in ("image_id", "source") else table.column(k).to_numpy()
        for k in GATE_COLUMNS
    }


def dataset_stats(path: Path, scheduler: str | None = None) -> dict:
    """Gate columns of a dataset directory (``stream_stats`` without side outputs)."""
    return stream_stats(path, scheduler=scheduler)


def stream_stats(
    path: Path,
    stats_out: Path | None = None,
    sample=None,
    scheduler: str | None = None,
    deferred: list | None = None,
) -> dict:
    """Score a dataset records part by records part, so memory is set by the part size.

    In this process by default, else one dask task per part (``map_parts``). Each part's
    stats go straight to ``stats_out`` (Parquet, in part order; a temporary file when
    None) and into ``sample`` (the report's binned counts and top images; with dask a
    second, coordinates-only pass here fills it); the gate's columns are read back from
    that file (``read_gate_columns``). ``read_part`` checks each part; the
    whole-dataset rules of ``read_records`` (unique ids, the manifest's counts) run on
    the columns read back.

    Given a ``deferred`` list, the unique-id check is appended to it as a function
    instead of run (it raises for a repeated id): the caller runs it where and when it
    suits (the audit: on a thread beside its gate and its report), and before it
    commits its output directory or writes anything outside it.
    """
    use_jemalloc()
    tune_heap()  # before any thread of the pass allocates
    manifest = read_manifest(path)
    parts = parts_of(path, manifest)
    if not parts:
        raise damaged(path, "it lists no records part")
    with contextlib.ExitStack() as stack:
        if stats_out is None:
            stats_out = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "stats.parquet"
        total = sum(r for _, r in parts) if None not in (r for _, r in parts) else None
        bar = progress(total=total, desc="audit: layout stats", unit="img")
        try:
            if scheduler is None:
                rows = _score_parts(path, parts, stats_out, sample, bar)
            else:
                rows = _dask_parts(path, parts, stats_out, scheduler, bar)
        finally:
            bar.close()
        cols = read_gate_columns(stats_out)
    starts = np.cumsum([0, *rows])
    check_ids = _whole_dataset(path, manifest, parts, starts, cols, sample, scheduler)
    if deferred is None:
        check_ids()
    else:
        deferred.append(check_ids)
    return cols


def _dask_parts(path, parts: list, stats_out: Path, scheduler: str, bar) -> list[int]:
    """One dask task per part (``map_parts``); their stats written here, in part order."""
    writer, rows = None, []
    try:
        for table in map_parts(_part_stats, [(path, *p) for p in parts], scheduler):
            writer = write_stats(table, stats_out, writer)
            rows.append(table.num_rows)
            bar.update(table.num_rows)
            del table
    finally:
        if writer is not None:
            writer.close()
    return rows


def _whole_dataset(path, manifest, parts, starts, cols: dict, sample, scheduler):
    """The rules on the whole dataset: its manifest's counts now, the unique ids as the
    returned function; with dask, the report's sample from a coordinates-only pass."""
    if scheduler is not None and sample is not None:
        for k, (part, rows) in enumerate(parts):
            records = read_part(path, part, STATS_COLUMNS, rows, BOX_COORDS)
            sample.add(records, cols["grid_score"][starts[k] : starts[k + 1]])

    where_of = row_locator([part for part, _ in parts], starts)
    check_kept_counts(path, manifest, int(starts[-1]), int(cols["n_boxes"].sum()))
    return lambda: check_unique_ids(path, cols["image_id"], where_of)
