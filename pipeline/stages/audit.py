"""The audit stage: dataset directory in, stats + verdict + report (+ remediated data) out.

``run_audit`` is the plain function behind ``groundset audit``. It writes
``layout_stats.parquet``, ``audit.json`` and ``report.html`` into the audit directory and,
when asked and when the gate lets training go on, a remediated dataset
(``pipeline.stages.audit_remediate``: filter, split or downweight).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.audit import (
    gate,
    grid_like,
    load_reference,
    reference_from_stats,
)
from analysis.grid_score import FAMILIES
from analysis.layout_stats import layout_columns, stats_to_arrow, write_stats
from pipeline.core import arrow_kernels as kernels
from pipeline.core import defaults
from pipeline.core.atomic import atomic_output_dir
from pipeline.core.dataset import (
    BOX_COORDS,
    check_kept_counts,
    dataset_input_paths,
    read_manifest,
    read_part,
)
from pipeline.core.errors import UserError
from pipeline.core.outputs import claim_output
from pipeline.core.progress import progress
from pipeline.core.validate import check_unique_ids, damaged
from pipeline.stages.audit_remediate import STAGE, decide, write_remediated
from pipeline.stages.parts import (
    check_scheduler,
    map_parts,
    parts_of,
    release_freed_arrow_memory,
)

REPORT = "audit-report"
SUMMARY = "summary.json"  # the DVC metrics file: headline numbers only
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
    """Score the parts here, one at a time, into ``kept``; returns the open stats writer.

    One pool of ``stats_workers`` threads for the whole pass runs each part's layout
    statistics, then encodes its stats Parquet (Arrow drops the GIL) while this thread
    draws the part's report sample and reads the next part: 0.1 s of a 1.1 s audit of
    250,000 images. On a thread of its own the encoding raised the 1,000,000-image peak
    to 1.32x the 250,000-image one, each thread keeping its freed memory between parts;
    on the threads that already hold the statistics' temporaries, 1.2x.

    Strictly one part in memory: reading the next part on a thread beside the scoring
    held two parts' data at once (1.47x from 250,000 to 1,000,000 images; 1.25x allowed).
    """
    from concurrent.futures import ThreadPoolExecutor, wait

    writer = written = None
    with ThreadPoolExecutor(stats_workers()) as pool:
        try:
            for part, rows in parts:
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
            if written is not None:
                writer, written = written.result(), None
        except BaseException:
            if written is not None:  # the encoding ends before its file is closed
                wait([written])
                writer = writer if written.exception() else written.result()
            if writer is not None:
                writer.close()
            raise
    return writer


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
    id_check: list | None = None,
) -> dict:
    """Score a dataset records part by records part, so memory is set by the part size.

    In this process by default, else one dask task per part (``map_parts``). Each part's
    stats go straight to ``stats_out`` (Parquet, in part order) and into ``sample`` (the
    report's binned counts and top images; with dask a second, coordinates-only pass
    here fills it); the gate keeps only ``GATE_COLUMNS`` (``GateColumns``). ``read_part``
    checks each part; the whole-dataset rules of ``read_records`` (unique ids, the
    manifest's counts) run on what the parts leave. Given an ``id_check`` list, the
    unique-id check is appended to it as a function instead of run: the caller runs it
    (it raises for a repeated id) before it writes anything outside its own atomic
    output directory, where and when it suits (the audit: on a thread after its gate).
    """
    release_freed_arrow_memory()
    manifest = read_manifest(path)
    parts = parts_of(path, manifest)
    kept, writer = GateColumns(parts), None
    bar = progress(total=kept.total, desc="audit: layout stats", unit="img")
    try:
        if scheduler is None:
            writer = _score_parts(path, parts, stats_out, sample, kept, bar)
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
    if len(kept.starts) == 1:
        raise damaged(path, "it lists no records part")
    starts = kept.starts
    if scheduler is not None and sample is not None:
        for k, (part, rows) in enumerate(parts):
            records = read_part(path, part, STATS_COLUMNS, rows, BOX_COORDS)
            sample.add(records, kept.part("grid_score", k))

    def where_of(row: int) -> str:
        k = int(np.searchsorted(starts, row, side="right") - 1)
        return f"records/{parts[k][0].name} row {row - starts[k]}"

    cols = kept.columns()
    if id_check is None:
        check_unique_ids(path, cols["image_id"], where_of)
    else:
        id_check.append(lambda: check_unique_ids(path, cols["image_id"], where_of))
    check_kept_counts(path, manifest, starts[-1], int(cols["n_boxes"].sum()))
    return cols


def resolve_reference(
    reference: str | Path | None, scheduler: str | None, pixels: bool = False
) -> dict:
    """A dataset directory, a reference JSON, or the built-in COCO reference.

    With ``pixels`` a reference directory gets the same pixel pass as the audited data,
    so that both shares count the images judged by their pixels alike; a reference
    JSON (the built-in one too) holds box scores only, and says so."""
    if reference is None:
        return load_reference()
    p = Path(reference)
    if p.is_file() and p.suffix == ".json":
        try:
            return load_reference(p)
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"reference {p} is not a reference JSON: {e}") from None
    cols = dataset_stats(p, scheduler)
    if pixels:
        from pipeline.stages.audit_pixels import pixel_pass

        pixel_pass(p, cols, None, scheduler)
    ref = reference_from_stats(cols, name=p.name)
    ref["judged_by"] = "boxes and pixels" if pixels else "boxes"
    return ref


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
    pixels: bool = False,
) -> dict:
    """Audit ``dataset`` into ``out``; return audit.json's content. ``pixels`` adds the
    image-space tiling check on the images themselves (``audit_pixels``).

    ``result["final_verdict"]`` is what should gate training: the input's verdict without
    remediation, the remediated data's verdict with it.
    """
    if remediate not in defaults.REMEDIATIONS:
        raise UserError(
            f"--remediate must be one of {', '.join(defaults.REMEDIATIONS)}, got {remediate!r}"
        )
    if remediate in ("filter", "split") and remediated_out is None:
        raise UserError(
            f"--remediate {remediate} needs --remediated-out DIR for the remediated dataset"
        )
    if not 0.0 <= threshold <= 1.0 or not 0.0 <= max_grid_share <= 1.0:
        raise UserError("--threshold and --max-grid-share must lie in [0, 1]")
    check_scheduler(scheduler)
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
            pixels,
        )


def _audit(
    dataset, out, reference, knobs, remediate, remediated_out, scheduler, report, pixels
) -> dict:
    with atomic_output_dir(out, kind=REPORT) as tmp:  # the report's files as one unit
        return _audit_into(
            tmp,
            dataset,
            out,
            reference,
            knobs,
            remediate,
            remediated_out,
            scheduler,
            report,
            pixels,
        )


def _audit_into(
    tmp, dataset, out, reference, knobs, remediate, remediated_out, scheduler, report, pixels
):
    threshold = knobs["threshold"]
    from analysis.report import ReportSample, render_report

    sample = ReportSample() if report else None
    stats_path = tmp / "layout_stats.parquet"
    # one pass over the records parts: memory is set by the part size, not the dataset's
    id_check = []
    cols = stream_stats(dataset, stats_path, sample, scheduler, id_check)
    pixel_info = None
    if pixels:  # the images themselves, a second pass: judged by pixels where boxes are few
        id_check.pop()()  # a repeated id stops the audit before this long pass
        from pipeline.stages.audit_pixels import PIXEL_SCORES, pixel_pass, pixel_table

        pixel_info = pixel_pass(dataset, cols, sample, scheduler)
        pq.write_table(pixel_table(cols), tmp / PIXEL_SCORES)
    ref = resolve_reference(reference, scheduler, pixels)
    result = gate(cols, ref, **knobs)
    ids_checked = _aside(id_check[0] if id_check else lambda: None)
    if pixel_info is not None:
        result["pixels"] = pixel_info
    flagged = grid_like(cols, threshold)
    params = {
        "reference": str(reference) if reference else "builtin:coco",
        **knobs,
        "remediate": remediate,
        **({"pixels": True} if pixels else {}),
    }
    rem, drop, weights, extra = decide(cols, result, ref, knobs, remediate, flagged, out)
    result["remediation"] = rem
    result["final_verdict"] = rem.get("verdict_after", result["verdict"])
    if remediated_out is not None:
        ids_checked.result()  # a repeated id stops the audit before anything is written
        rem["out"] = str(remediated_out)
        if result["final_verdict"] == "pass":
            split = remediate == "split"
            m = write_remediated(dataset, Path(remediated_out), params, cols, drop, extra, split)
            if remediate in ("filter", "split"):
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
    (tmp / "audit.json").write_text(json.dumps(result, indent=2) + "\n")
    (tmp / SUMMARY).write_text(json.dumps(headline(result), indent=2) + "\n")
    if report:
        roots = {
            s: m.get("images_root") for s, m in read_manifest(dataset).get("sources", {}).items()
        }
        page = render_report(cols, result, ref, sample=sample, roots=roots)
        (tmp / "report.html").write_text(page)
    ids_checked.result()  # and before its own directory is committed
    return result


def _aside(check):
    """``check`` run on a thread (NumPy hashes and sorts the ids without the GIL), beside
    what the audit does after its gate: the report is drawn meanwhile, and the check's
    hashes (16 bytes an id at most) are never held with the gate's temporaries. A
    future: its ``result()`` raises for a repeated id."""
    from concurrent.futures import ThreadPoolExecutor

    checker = ThreadPoolExecutor(1)
    checking = checker.submit(check)
    checker.shutdown(wait=False)  # the submitted check still runs to its end
    return checking
