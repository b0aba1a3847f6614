"""Dataset directories written part by part: the one writer of every dataset directory.

``write_dataset`` (``pipeline.core.dataset``) writes a table already in memory through
it; a stage that streams its input (``curate``, the audit's remediated copy) ``add``s
each part as it is done, so its memory is set by the part size, not the dataset size.
The manifest is the same either way: parts, counts checked against the accounting
identities, no timestamp.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import dataset
from pipeline.core.atomic import atomic_output_dir
from pipeline.core.dataset import (
    MANIFEST,
    RECORDS,
    REJECTS,
    _refuse_total_loss,
    _relative_roots,
    check_counts,
    count_rejects,
    input_entry,
    n_boxes,
    versions,
)
from pipeline.core.records import RECORD_SCHEMA, REJECT_SCHEMA, empty_rejects, fill_optional


class DatasetWriter:
    """A dataset directory written records part by records part (``dataset_writer``).

    ``add(records, rejects)`` writes the records as parts of ``ROWS_PER_PART`` rows
    (the last one shorter) and appends the rejects to ``rejects.parquet``; at most one
    part's rows and the counts stay in memory, so a stage that streams its input writes
    its output in bounded memory.
    """

    def __init__(self, tmp: Path, manifest: dict) -> None:
        self.tmp, self.manifest = tmp, manifest
        self.parts: list[dict] = []
        self.images = self.boxes = 0
        self.rejected: tuple[dict, dict] = ({}, {})
        self._rejects: pq.ParquetWriter | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        (tmp / RECORDS).mkdir()

    def add(self, records: pa.Table, rejects: pa.Table | None = None) -> None:
        if records.schema != RECORD_SCHEMA:  # older tables lack the optional fields
            records = fill_optional(records).cast(RECORD_SCHEMA)
        self.images += records.num_rows
        self.boxes += n_boxes(records)
        # Rows are buffered up to a full part, so the parts are the same whether the
        # records come in one table or in pieces (a stage streaming its input).
        if records.num_rows:
            self._buffer.append(records)
            self._buffered += records.num_rows
        while self._buffered >= dataset.ROWS_PER_PART:
            self._flush(dataset.ROWS_PER_PART)
        if rejects is not None and rejects.num_rows:
            rejects = rejects.cast(REJECT_SCHEMA)
            self._rejects = self._rejects or pq.ParquetWriter(self.tmp / REJECTS, REJECT_SCHEMA)
            self._rejects.write_table(rejects)
            for mine, theirs in zip(self.rejected, count_rejects(rejects)):
                for reason, n in theirs.items():
                    mine[reason] = mine.get(reason, 0) + n

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self._buffer)
        self._part(table.slice(0, rows))
        rest = table.slice(rows)
        self._buffer, self._buffered = ([rest] if rest.num_rows else []), rest.num_rows

    def _part(self, part: pa.Table) -> None:
        name = f"part-{len(self.parts):05d}.parquet"
        pq.write_table(part, self.tmp / RECORDS / name)
        self.parts.append({"file": name, "rows": part.num_rows})

    def finish(
        self, images_in: int, boxes_in: int, extra: dict | None = None, added: dict | None = None
    ) -> dict:
        """Check the counts, write the manifest; the directory is renamed into place when
        the ``dataset_writer`` block ends. ``added`` ({"images": {reason: n}, "boxes": ...})
        counts records the stage made rather than read (in + added = kept + rejected)."""
        if self._buffered:
            self._flush(self._buffered)
        if self._rejects is not None:
            self._rejects.close()
        else:
            pq.write_table(empty_rejects(), self.tmp / REJECTS)
        if not self.parts:  # an empty dataset still has its one (empty) part
            self._part(RECORD_SCHEMA.empty_table())
        img, box = ({k: v for k, v in sorted(d.items())} for d in self.rejected)
        counts = {
            "images_in": int(images_in),
            "images_kept": self.images,
            "images_rejected": img,
            "boxes_in": int(boxes_in),
            "boxes_kept": self.boxes,
            "boxes_rejected": box,
        }
        for kind, by_reason in (added or {}).items():
            if by_reason:
                counts[f"{kind}_added"] = {k: int(v) for k, v in sorted(by_reason.items())}
        check_counts(counts)
        manifest = {**self.manifest, "counts": counts, "versions": versions()}
        if extra:
            manifest.update(extra)
        _refuse_total_loss(manifest["stage"], counts)
        manifest["parts"] = self.parts
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        return manifest


@contextlib.contextmanager
def dataset_writer(
    out: str | Path, *, stage: str, inputs: list, params: dict, sources: dict | None = None
) -> Iterator[DatasetWriter]:
    """Write a dataset directory atomically, part by part: ``add`` each part, then
    ``finish`` with the input counts; an exception leaves ``out`` as it was."""
    out = Path(out)
    manifest = {
        "stage": stage,
        "inputs": [i if isinstance(i, dict) else input_entry(i) for i in inputs],
        "params": params,
        "sources": _relative_roots(sources or {}, out),
    }
    with atomic_output_dir(out, kind=stage) as tmp:
        writer = DatasetWriter(tmp, manifest)
        yield writer
        if not (tmp / MANIFEST).is_file():
            raise AssertionError("dataset_writer: finish() was not called")


def write_extra(target: Path, content) -> None:
    """A side output of a dataset directory: an Arrow table as Parquet, else the bytes or
    text verbatim."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, pa.Table):
        pq.write_table(content, target)
    elif isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content)
