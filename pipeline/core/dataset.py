"""Dataset directories: the one on-disk contract between stages.

A dataset directory holds ``records/part-*.parquet`` (one row per image),
``rejects.parquet`` (one row per rejected image or box) and ``manifest.json``. A stage
writes the whole directory under a temporary name and renames it into place, so a
killed stage never leaves a half-written dataset that a later stage would trust.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.atomic import atomic_output_dir
from pipeline.core.errors import UserError
from pipeline.core.hashing import sha256_file
from pipeline.core.records import BOX, IMAGE, RECORD_SCHEMA, REJECT_SCHEMA, empty_rejects

ROWS_PER_PART = 200_000
MANIFEST = "manifest.json"
REJECTS = "rejects.parquet"
RECORDS = "records"


def input_entry(path: str | Path) -> dict:
    """Describe an input for the manifest: files get a sha256, directories a listing hash."""
    p = Path(path)
    if p.is_file():
        return {"path": str(p), "sha256": sha256_file(p)}
    if p.is_dir() and (p / MANIFEST).is_file():
        return {"path": str(p), "sha256": sha256_file(p / MANIFEST)}
    return {"path": str(p), "sha256": None}


def versions() -> dict:
    out = {"python": sys.version.split()[0], "pyarrow": pa.__version__}
    from importlib.metadata import PackageNotFoundError, version

    try:
        out["groundset"] = version("groundset")
    except PackageNotFoundError:  # running from a source tree without install metadata
        out["groundset"] = "unknown"
    return out


def count_rejects(rejects: pa.Table) -> tuple[dict, dict]:
    """Reject counts by reason, separately for images and boxes (grouped in Arrow)."""
    grouped = (
        rejects.select(["kind", "reason"])
        .group_by(["kind", "reason"])
        .aggregate([([], "count_all")])
    )
    by_kind: dict = {IMAGE: {}, BOX: {}}
    for kind, reason, n in zip(
        *(grouped.column(c).to_pylist() for c in ("kind", "reason", "count_all"))
    ):
        if kind in by_kind:
            by_kind[kind][reason] = n
    return dict(sorted(by_kind[IMAGE].items())), dict(sorted(by_kind[BOX].items()))


def n_boxes(records: pa.Table) -> int:
    return int(pc.sum(pc.list_value_length(records.column("boxes"))).as_py() or 0)


def make_counts(records: pa.Table, rejects: pa.Table, images_in: int, boxes_in: int) -> dict:
    """The manifest's ``counts``, checked against the two accounting identities.

    An identity that does not hold is a bug in the stage, not in the user's data, so it
    raises AssertionError rather than UserError.
    """
    images_rejected, boxes_rejected = count_rejects(rejects)
    counts = {
        "images_in": int(images_in),
        "images_kept": records.num_rows,
        "images_rejected": images_rejected,
        "boxes_in": int(boxes_in),
        "boxes_kept": n_boxes(records),
        "boxes_rejected": boxes_rejected,
    }
    check_counts(counts)
    return counts


def check_counts(counts: dict) -> None:
    img = counts["images_kept"] + sum(counts["images_rejected"].values())
    box = counts["boxes_kept"] + sum(counts["boxes_rejected"].values())
    assert counts["images_in"] == img, f"image accounting broken: {counts}"
    assert counts["boxes_in"] == box, f"box accounting broken: {counts}"


@dataclass
class Dataset:
    """A dataset directory loaded into memory (records are Arrow, zero-copy where possible)."""

    path: Path
    records: pa.Table
    rejects: pa.Table
    manifest: dict = field(default_factory=dict)

    @property
    def sources(self) -> dict:
        """Per-source metadata, most importantly each source's ``images_root``."""
        return self.manifest.get("sources", {})

    def image_path(self, source: str, file: str) -> Path | None:
        root = self.sources.get(source, {}).get("images_root")
        return Path(root) / file if root else None

    def input_paths(self) -> list[Path]:
        return dataset_input_paths(self.path, self.manifest)


def dataset_input_paths(path: str | Path, manifest: dict | None = None) -> list[Path]:
    """A dataset directory and its images roots: what a stage's output must never overlap."""
    path = Path(path)
    if manifest is None:
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError):
            manifest = {}
    sources = manifest.get("sources") if isinstance(manifest, dict) else None
    roots = [s.get("images_root") for s in (sources or {}).values() if isinstance(s, dict)]
    return [path, *(Path(r) for r in roots if isinstance(r, str) and r)]


def read_records(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    d = Path(path) / RECORDS
    parts = sorted(d.glob("part-*.parquet"))
    if not parts:
        return (
            RECORD_SCHEMA.empty_table()
            if columns is None
            else RECORD_SCHEMA.empty_table().select(columns)
        )
    tables = [pq.read_table(p, columns=columns) for p in parts]
    return pa.concat_tables(tables)


def read_dataset(path: str | Path, columns: list[str] | None = None) -> Dataset:
    p = Path(path)
    if not (p / MANIFEST).is_file():
        raise UserError(f"{p} is not a groundset dataset directory (no {MANIFEST})")
    try:
        manifest = json.loads((p / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{p / MANIFEST} cannot be read: {e}") from None
    rejects = pq.read_table(p / REJECTS) if (p / REJECTS).is_file() else empty_rejects()
    return Dataset(p, read_records(p, columns), rejects, manifest)


def write_dataset(
    out: str | Path,
    records: pa.Table,
    rejects: pa.Table | None,
    *,
    stage: str,
    inputs: list,
    params: dict,
    images_in: int,
    boxes_in: int,
    sources: dict | None = None,
    extra: dict | None = None,
    extra_files: dict | None = None,
) -> dict:
    """Write a complete dataset directory atomically and return its manifest.

    ``extra_files`` maps a relative name to a ``pyarrow.Table`` (written as Parquet) or
    ``bytes``/``str`` (written verbatim), for stage-specific side outputs.
    """
    out = Path(out)
    records = records.cast(RECORD_SCHEMA) if records.schema != RECORD_SCHEMA else records
    rejects = empty_rejects() if rejects is None else rejects.cast(REJECT_SCHEMA)
    manifest = {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": [i if isinstance(i, dict) else input_entry(i) for i in inputs],
        "params": params,
        "sources": sources or {},
        "counts": make_counts(records, rejects, images_in, boxes_in),
        "versions": versions(),
    }
    if extra:
        manifest.update(extra)

    with atomic_output_dir(out, kind=stage) as tmp:
        (tmp / RECORDS).mkdir()
        for i, start in enumerate(range(0, max(records.num_rows, 1), ROWS_PER_PART)):
            part = records.slice(start, ROWS_PER_PART)
            pq.write_table(part, tmp / RECORDS / f"part-{i:05d}.parquet")
        pq.write_table(rejects, tmp / REJECTS)
        for name, content in (extra_files or {}).items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, pa.Table):
                pq.write_table(content, target)
            elif isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest
