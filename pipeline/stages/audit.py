"""The audit stage: dataset directory in, stats + verdict + report (+ remediated data) out.

``run_audit`` is the plain function behind ``groundset audit``. It writes
``layout_stats.parquet``, ``audit.json`` and ``report.html`` into the audit directory and,
when asked, a remediated dataset: ``filter`` drops the grid-like images (rejected with
reason ``grid_like``, their boxes ``parent_image_rejected``); ``downweight`` keeps every
image and writes ``weights.parquet`` (``image_id -> weight``) for the trainer's sampler.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analysis.audit import downweight, gate, grid_like, load_reference, reference_from_stats
from analysis.layout_stats import layout_stats, stats_to_arrow
from pipeline.core import defaults
from pipeline.core.atomic import atomic_output_dir
from pipeline.core.dataset import (
    BOX_COORDS,
    dataset_input_paths,
    input_entry,
    n_boxes,
    read_dataset,
    read_manifest,
    read_part,
    record_parts,
    write_dataset,
)
from pipeline.core.errors import UserError
from pipeline.core.outputs import claim_output
from pipeline.core.progress import progress
from pipeline.core.records import BOX, IMAGE, PARENT_IMAGE_REJECTED, reject_rows
from pipeline.core.validate import check_unique_ids, damaged

if TYPE_CHECKING:
    import pandas as pd

STAGE = "audit"
REPORT = "audit-report"
SUMMARY = "summary.json"  # the DVC metrics file: headline numbers only
GRID_LIKE = "grid_like"
STATS_COLUMNS = ["image_id", "source", "boxes"]
GATE_COLUMNS = ["image_id", "source", "n_boxes", "grid_score", "low_evidence"] + [
    f"{f}_score" for f in ("lattice", "rows", "mosaic")
]  # all the gate, the reference, the weights and the report read of the stats


def _prefetch_imports() -> threading.Thread:
    """Import the slow pure-Python libraries on a thread while the main thread reads and
    scores the records, which run in Arrow and NumPy mostly without the GIL.

    pandas (the stats frame) and scipy.stats (the gate's tests) take about 0.9 s to import
    on this machine; when the second core is free most of it overlaps with the work. A
    later import of the same module waits for the thread's (Python's per-module import
    lock), so nothing runs half-imported.
    """

    def run():
        import pandas  # noqa: F401
        import scipy.stats  # noqa: F401

    thread = threading.Thread(target=run, name="audit-imports", daemon=True)
    thread.start()
    return thread


def stats_workers() -> int:
    """Threads for the layout statistics: NumPy drops the GIL in its loops."""
    return max(1, min(4, os.cpu_count() or 1))


def records_stats(records: pa.Table) -> pd.DataFrame:
    """Layout stats of records already in memory (the report reuses the same records)."""
    return layout_stats(
        records,
        workers=stats_workers(),
        progress_bar=lambda b, **kw: progress(b, desc="layout stats", unit="block", **kw),
    )


def _part_stats(path: Path, part: Path, rows: int | None) -> pd.DataFrame:
    return layout_stats(read_part(path, part, STATS_COLUMNS, rows, BOX_COORDS))


def dataset_stats(path: Path, scheduler: str | None = None) -> pd.DataFrame:
    """Layout stats of a dataset directory, in-process or one dask task per records part.

    ``scheduler`` is ``None`` (in-process, chunked, vectorised), a local dask scheduler
    name (``threads``, ``processes``, ``synchronous``) or a ``tcp://`` address of an
    existing cluster; parts are read by the workers, so data larger than memory streams.
    """
    if scheduler is None:
        return stream_stats(path)
    import dask
    import pandas as pd

    manifest = read_manifest(path)
    rows = {p["file"]: p["rows"] for p in manifest.get("parts") or []}
    parts = record_parts(path, manifest)
    tasks = [dask.delayed(_part_stats)(path, p, rows.get(p.name)) for p in parts]
    if "://" in scheduler:
        from dask.distributed import Client

        try:
            client = Client(scheduler, timeout=10)
        except OSError as e:
            raise UserError(f"cannot reach dask scheduler {scheduler}: {e}") from None
        with client:
            frames = client.compute(tasks, sync=True)
    elif scheduler in ("threads", "processes", "synchronous"):
        frames = list(dask.compute(*tasks, scheduler=scheduler))
    else:
        raise UserError(
            f"--scheduler must be threads, processes, synchronous or an address "
            f"like tcp://host:8786, got {scheduler!r}"
        )
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else layout_stats(read_dataset(path, STATS_COLUMNS, BOX_COORDS).records)
    )


def stream_stats(path: Path, stats_out: Path | None = None, sample=None) -> pd.DataFrame:
    """Score a dataset records part by records part, so memory is set by the part size.

    Each part's stats go straight to ``stats_out`` (Parquet, in part order) and into
    ``sample`` (the report's binned counts and top images); the gate keeps only the
    columns in ``GATE_COLUMNS``. ``read_part`` checks each part; the whole-dataset rules
    of ``read_records`` (unique ids, the manifest's counts) run on what the parts leave.
    """
    import pandas as pd

    manifest = read_manifest(path)
    parts = record_parts(path, manifest)
    rows = {p["file"]: p["rows"] for p in manifest.get("parts") or []}
    frames, starts, boxes, writer = [], [0], 0, None
    try:
        for part in parts:
            records = read_part(path, part, STATS_COLUMNS, rows.get(part.name), BOX_COORDS)
            df = records_stats(records)
            if stats_out is not None:
                table = stats_to_arrow(df)
                writer = writer or pq.ParquetWriter(stats_out, table.schema)
                writer.write_table(table)
                del table
            if sample is not None:
                sample.add(records, df["grid_score"].to_numpy(float))
            frames.append(df[GATE_COLUMNS].copy())  # a real copy: a CoW slice keeps all of df
            starts.append(starts[-1] + records.num_rows)
            boxes += n_boxes(records)
            del records, df  # before the next part is read: one part at a time
    finally:
        if writer is not None:
            writer.close()
    if not frames:
        raise damaged(path, "it lists no records part")

    def where_of(row: int) -> str:
        k = int(np.searchsorted(starts, row, side="right") - 1)
        return f"records/{parts[k].name} row {row - starts[k]}"

    ids = [pa.array(f["image_id"].array, pa.string()) for f in frames]
    check_unique_ids(path, pa.chunked_array(ids, pa.string()), where_of)
    counts = manifest.get("counts") or {}
    for what, n, key in (("images", starts[-1], "images_kept"), ("boxes", boxes, "boxes_kept")):
        if key in counts and n != counts[key]:
            raise damaged(path, f"the records hold {n} {what}, manifest.json counts {counts[key]}")
    return pd.concat(frames, ignore_index=True)


def resolve_reference(reference: str | Path | None, scheduler: str | None) -> dict:
    """A dataset directory, a reference JSON, or the built-in COCO reference."""
    if reference is None:
        return load_reference()
    p = Path(reference)
    if p.is_file() and p.suffix == ".json":
        try:
            return load_reference(p)
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"reference {p} is not a reference JSON: {e}") from None
    return reference_from_stats(dataset_stats(p, scheduler), name=p.name)


def _filter(ds, df: pd.DataFrame, flagged: np.ndarray, out: Path, params: dict) -> dict:
    records = ds.records
    lengths = np.asarray(pc.list_value_length(records.column("boxes")).fill_null(0), np.int64)
    ids = df["image_id"].to_numpy(object)
    src = df["source"].to_numpy(object)
    files = np.asarray(records.column("file").to_pylist(), dtype=object)
    img = np.flatnonzero(flagged)
    owner = np.repeat(img, lengths[img])
    within = np.arange(owner.size) - np.repeat(np.cumsum(lengths[img]) - lengths[img], lengths[img])
    detail = [f"grid_score={s:.3f}" for s in df["grid_score"].to_numpy(float)[img]]
    rejects = pa.concat_tables(
        [
            reject_rows(
                stage=STAGE,
                source=list(src[img]),
                kind=IMAGE,
                image_id=list(ids[img]),
                file=list(files[img]),
                box_index=[-1] * img.size,
                reason=GRID_LIKE,
                detail=detail,
            ),
            reject_rows(
                stage=STAGE,
                source=list(src[owner]),
                kind=BOX,
                image_id=list(ids[owner]),
                file=list(files[owner]),
                box_index=within.tolist(),
                reason=PARENT_IMAGE_REJECTED,
                detail="",
            ),
        ]
    )
    kept = records.filter(pa.array(~flagged))
    return write_dataset(
        out,
        kept,
        rejects,
        stage=STAGE,
        inputs=[input_entry(ds.path)],
        params=params,
        images_in=records.num_rows,
        boxes_in=n_boxes(records),
        sources=ds.sources,
    )


def _copy(ds, out: Path, params: dict, extra_files: dict | None = None) -> dict:
    """The audited records unchanged (downweight and pass-through outputs)."""
    return write_dataset(
        out,
        ds.records,
        None,
        stage=STAGE,
        inputs=[input_entry(ds.path)],
        params=params,
        images_in=ds.records.num_rows,
        boxes_in=n_boxes(ds.records),
        sources=ds.sources,
        extra_files=extra_files,
    )


def headline(result: dict) -> dict:
    """The numbers a person compares across runs (``dvc metrics show``); audit.json keeps
    the tests, thresholds and worst images."""
    shares = result["grid_share"]
    rem = result["remediation"]
    return {
        "verdict": result["verdict"],
        "final_verdict": result["final_verdict"],
        "n_images": result["n_images"],
        "grid_like_share": shares["overall"].get("share"),
        "reference_share": result["reference"]["grid_share"],
        "grid_like_share_by_source": {s: v.get("share") for s, v in shares["per_source"].items()},
        "images_removed": rem.get("images_removed", 0),
    }


def run_audit(
    dataset: str | Path,
    out: str | Path,
    *,
    reference: str | Path | None = None,
    threshold: float = defaults.GRID_SCORE_THRESHOLD,
    max_grid_share: float = defaults.MAX_GRID_SHARE,
    alpha: float = defaults.AUDIT_ALPHA,
    remediate: str = defaults.REMEDIATE,
    remediated_out: str | Path | None = None,
    scheduler: str | None = None,
    report: bool = True,
    overwrite: bool = False,
) -> dict:
    """Audit ``dataset`` into ``out``; return audit.json's content.

    ``result["final_verdict"]`` is what should gate training: the input's verdict without
    remediation, the remediated data's verdict with it.
    """
    if remediate not in defaults.REMEDIATIONS:
        raise UserError(
            f"--remediate must be one of {', '.join(defaults.REMEDIATIONS)}, got {remediate!r}"
        )
    if remediate == "filter" and remediated_out is None:
        raise UserError("--remediate filter needs --remediated-out DIR for the filtered dataset")
    if not 0.0 <= threshold <= 1.0 or not 0.0 <= max_grid_share <= 1.0:
        raise UserError("--threshold and --max-grid-share must lie in [0, 1]")
    dataset, out = Path(dataset), Path(out)
    inputs = [*dataset_input_paths(dataset), reference]
    with contextlib.ExitStack() as claims:
        claims.enter_context(
            claim_output(out, kind=REPORT, inputs=[*inputs, remediated_out], overwrite=overwrite)
        )
        if remediated_out is not None:
            claims.enter_context(
                claim_output(remediated_out, kind=STAGE, inputs=[*inputs, out], overwrite=overwrite)
            )
        return _audit(
            dataset,
            out,
            reference,
            {"threshold": threshold, "max_grid_share": max_grid_share, "alpha": alpha},
            remediate,
            remediated_out,
            scheduler,
            report,
        )


def _audit(dataset, out, reference, knobs, remediate, remediated_out, scheduler, report) -> dict:
    with atomic_output_dir(out, kind=REPORT) as tmp:  # the report's files as one unit
        return _audit_into(
            tmp, dataset, out, reference, knobs, remediate, remediated_out, scheduler, report
        )


def _audit_into(tmp, dataset, out, reference, knobs, remediate, remediated_out, scheduler, report):
    threshold, max_grid_share = knobs["threshold"], knobs["max_grid_share"]
    _prefetch_imports()
    from analysis.report import ReportSample, render_report

    sample, ds = ReportSample() if report else None, None
    stats_path = tmp / "layout_stats.parquet"
    if remediated_out is not None:  # the copy needs every column: read once, all of it
        ds = read_dataset(dataset)
        df = records_stats(ds.records) if scheduler is None else dataset_stats(dataset, scheduler)
        if report:
            sample = ReportSample.of(ds.records, df)
    elif scheduler is None:  # stream: memory set by the part size, not the dataset size
        df = stream_stats(dataset, stats_path, sample)
    else:
        df = dataset_stats(dataset, scheduler)
        if report:
            sample = ReportSample.of(read_dataset(dataset, STATS_COLUMNS, BOX_COORDS).records, df)
    ref = resolve_reference(reference, scheduler)
    result = gate(df, ref, **knobs)
    flagged = grid_like(df, threshold)
    params = {
        "reference": str(reference) if reference else "builtin:coco",
        **knobs,
        "remediate": remediate,
    }
    rem = {"mode": remediate}
    weights = None
    write = None  # the remediated dataset: written only if the data may be trained on
    if remediate == "filter":
        after = gate(df[~flagged].reset_index(drop=True), ref, **knobs)
        rem.update(images_removed=int(flagged.sum()), verdict_after=after["verdict"])
        write = lambda ds: _filter(ds, df, flagged, Path(remediated_out), params)
    elif remediate == "downweight":
        w = downweight(df, flagged, result["reference"]["grid_share"])
        weights = pa.table({"image_id": df["image_id"].astype(str).tolist(), "weight": w})
        judged = ~df["low_evidence"].to_numpy(bool)
        eff = float(w[flagged].sum() / max(w[judged].sum(), 1e-12))
        verdict_after = (
            "pass" if eff - result["reference"]["grid_share"] <= max_grid_share else "fail"
        )
        rem.update(
            weights=str(out / "weights.parquet"),
            grid_like_weight=float(w[flagged].min()) if flagged.any() else 1.0,
            effective_share=eff,
            verdict_after=verdict_after,
        )
        if remediated_out is not None:
            extra = {"weights.parquet": weights}
            write = lambda ds: _copy(ds, Path(remediated_out), params, extra)
    elif remediated_out is not None:  # a pass-through copy, for pipelines that always name it
        write = lambda ds: _copy(ds, Path(remediated_out), params)
    result["remediation"] = rem
    result["final_verdict"] = rem.get("verdict_after", result["verdict"])
    if remediated_out is not None:
        rem["out"] = str(remediated_out)
        if result["final_verdict"] == "pass":
            m = write(ds)
            if remediate == "filter":
                rem["counts"] = m["counts"]
        else:
            # The gate holds: data it rejected must not sit where training looks. The
            # claim allowed replacing this folder, so it is an earlier output (or empty).
            rem["out"] = None
            if Path(remediated_out).exists():
                shutil.rmtree(remediated_out)
    result["dataset"] = str(dataset)
    if weights is not None:
        pq.write_table(weights, tmp / "weights.parquet")
    if not stats_path.exists():
        pq.write_table(stats_to_arrow(df), stats_path)
    (tmp / "audit.json").write_text(json.dumps(result, indent=2) + "\n")
    (tmp / SUMMARY).write_text(json.dumps(headline(result), indent=2) + "\n")
    if report:
        (tmp / "report.html").write_text(render_report(df, result, ref, sample=sample))
    return result
