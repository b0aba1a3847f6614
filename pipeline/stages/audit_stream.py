"""The audit's one pass over a dataset: layout statistics part by part, the gate's columns.

``stream_stats`` reads, checks and scores one records part at a time (here, or one
dask task per part), writes each part's statistics to ``layout_stats.parquet`` and
keeps only what the gate needs (``GateColumns``), so that memory is set by the part
size. ``pipeline.stages.audit`` gates, reports and remediates on what it returns.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from analysis.grid_score import FAMILIES
from analysis.layout_stats import layout_columns, stats_to_arrow, write_stats
from pipeline.core import arrow_kernels as kernels
from pipeline.core.arrow_env import use_jemalloc
from pipeline.core.dataset import (
    BOX_COORDS,
    check_kept_counts,
    read_manifest,
    read_part,
    row_locator,
)
from pipeline.core.heap import release_free_heap
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


class GateColumns:
    """The per-image columns the gate keeps while the parts stream past (``GATE_COLUMNS``,
    about 45 bytes an image with ids like ``bench:123456``).

    Numeric columns go into arrays sized once from the manifest's row counts: appended
    part by part and concatenated at the end, they were held twice at the end and pinned
    freed memory between parts, so that a 1,000,000-image audit peaked 1.3x higher than
    a 250,000-image one. Ids stay Arrow chunks (no Python string per image); sources are
    kept dictionary-encoded, 4 bytes an image instead of the name's length and 4 (the
    gate and the report read them as codes anyway)."""

    def __init__(self, parts: list):
        rows = [r for _, r in parts]
        self.total = sum(rows) if rows and None not in rows else None
        self.numeric, self.strings, self.starts = {}, {}, [0]

    def add(self, cols: dict) -> None:
        n, at = len(cols["grid_score"]), self.starts[-1]
        for name in GATE_COLUMNS:
            value = cols[name]
            if isinstance(value, (pa.Array, pa.ChunkedArray)):
                if name == "source":
                    value = kernels.dictionary_encode(value)
                chunks = value.chunks if isinstance(value, pa.ChunkedArray) else [value]
                self.strings.setdefault(name, (value.type, []))[1].extend(chunks)
            elif self.total is not None:  # read_part held each part to its listed rows
                if name not in self.numeric:
                    self.numeric[name] = np.empty(self.total, np.asarray(value).dtype)
                self.numeric[name][at : at + n] = value
            else:  # an older manifest without row counts
                self.numeric.setdefault(name, []).append(np.asarray(value))
        self.starts.append(at + n)

    def part(self, name: str, k: int) -> np.ndarray:
        """Part ``k``'s values of a numeric column."""
        col = self.numeric[name]
        return col[k] if isinstance(col, list) else col[self.starts[k] : self.starts[k + 1]]

    def columns(self) -> dict:
        n = self.starts[-1]
        out = {k: pa.chunked_array(chunks, kind) for k, (kind, chunks) in self.strings.items()}
        for k, v in self.numeric.items():
            out[k] = np.concatenate(v) if isinstance(v, list) else v[:n]
        return {k: out[k] for k in GATE_COLUMNS}


def _part_stats(path: Path, part: Path, rows: int | None) -> pa.Table:
    """One part's stats as Arrow: what a dask task returns (Arrow pickles without copies)."""
    return stats_to_arrow(layout_columns(read_part(path, part, STATS_COLUMNS, rows, BOX_COORDS)))


def _score_parts(path, parts: list, stats_out: Path | None, sample, kept: GateColumns, bar):
    """Score the parts here, one at a time, into ``kept``. Returns ``finish``: it waits
    for the last part's stats encoding, still going on when this returns, and closes
    the stats file.

    One pool of ``stats_workers`` threads for the whole pass runs each part's layout
    statistics, then encodes its stats Parquet (Arrow drops the GIL) while this thread
    draws the part's report sample and reads the next part: 0.1 s of a 1.1 s audit of
    250,000 images. On a thread of its own the encoding raised the 1,000,000-image peak
    to 1.32x the 250,000-image one, each thread keeping its freed memory between parts;
    on the threads that already hold the statistics' temporaries, 1.2x. The last part's
    encoding goes on beside the gate (the gate needs only ``kept``).

    Strictly one part in memory: reading the next part on a thread beside the scoring
    held two parts' data at once (1.47x from 250,000 to 1,000,000 images; 1.25x allowed).
    Before each read the heaps' free pages go back to the system (``pipeline.core.heap``).
    """
    from concurrent.futures import ThreadPoolExecutor, wait

    writer = written = None
    pool = ThreadPoolExecutor(stats_workers())
    try:
        for part, rows in parts:
            release_free_heap()  # the last part's freed temporaries: not under this read
            records = read_part(path, part, STATS_COLUMNS, rows, BOX_COORDS)
            if written is not None:  # the last part's encoding went on beside this read
                writer, written = written.result(), None
            cols = layout_columns(records, pool=pool)
            kept.add(cols)
            if stats_out is not None:
                written = pool.submit(write_stats, stats_to_arrow(cols), stats_out, writer)
            if sample is not None:
                sample.add(records, cols["grid_score"], pool)
            bar.update(len(cols["grid_score"]))
            del records, cols  # before the next part is read
    except BaseException:
        if written is not None:  # the encoding ends before its file is closed
            wait([written])
            writer = writer if written.exception() else written.result()
        if writer is not None:
            writer.close()
        pool.shutdown()
        raise
    pool.shutdown(wait=False)  # the last encoding runs on

    def finish() -> None:
        last = written.result() if written is not None else writer
        if last is not None:
            last.close()

    return finish


def _gate_part(table: pa.Table) -> dict:
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
    stats go straight to ``stats_out`` (Parquet, in part order) and into ``sample`` (the
    report's binned counts and top images; with dask a second, coordinates-only pass
    here fills it); the gate keeps only ``GATE_COLUMNS`` (``GateColumns``). ``read_part``
    checks each part; the whole-dataset rules of ``read_records`` (unique ids, the
    manifest's counts) run on what the parts leave.

    Given a ``deferred`` list, two steps are appended to it as functions instead of run:
    finishing the stats file (its last part's encoding, then closing it) and the
    unique-id check (it raises for a repeated id). The caller runs them, in order,
    where and when it suits (the audit: on threads beside its gate and its report),
    and before it commits its output directory or writes anything outside it.
    """
    use_jemalloc()
    manifest = read_manifest(path)
    parts = parts_of(path, manifest)
    kept, writer, finish = GateColumns(parts), None, None
    bar = progress(total=kept.total, desc="audit: layout stats", unit="img")
    try:
        if scheduler is None:
            finish = _score_parts(path, parts, stats_out, sample, kept, bar)
        else:
            for table in map_parts(_part_stats, [(path, *p) for p in parts], scheduler):
                if stats_out is not None:
                    writer = write_stats(table, stats_out, writer)
                kept.add(_gate_part(table))
                bar.update(table.num_rows)
                del table
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    finish = finish or (lambda: None)
    try:
        cols, check_ids = _whole_dataset(path, manifest, parts, kept, sample, scheduler)
    except BaseException:
        finish()
        raise
    if deferred is None:
        finish()
        check_ids()
    else:
        deferred += [finish, check_ids]
    return cols


def _whole_dataset(path, manifest, parts, kept: GateColumns, sample, scheduler):
    """The gate's columns and the rules on the whole dataset (its manifest's counts now,
    the unique ids as the returned function)."""
    if len(kept.starts) == 1:
        raise damaged(path, "it lists no records part")
    if scheduler is not None and sample is not None:
        for k, (part, rows) in enumerate(parts):
            records = read_part(path, part, STATS_COLUMNS, rows, BOX_COORDS)
            sample.add(records, kept.part("grid_score", k))

    where_of = row_locator([part for part, _ in parts], kept.starts)
    cols = kept.columns()
    check_kept_counts(path, manifest, kept.starts[-1], int(cols["n_boxes"].sum()))
    return cols, lambda: check_unique_ids(path, cols["image_id"], where_of)
