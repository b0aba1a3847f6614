"""The audit stage: dataset directory in, stats + verdict + report (+ remediated data) out.

``run_audit`` is the plain function behind ``groundset audit``. It writes
``layout_stats.parquet``, ``audit.json`` and ``report.html`` into the audit directory and,
when asked and when the gate lets training go on, a remediated dataset
(``pipeline.stages.audit_remediate``: filter, split or downweight).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from analysis.audit import (
    gate,
    grid_like,
    load_reference,
    reference_from_stats,
)
from pipeline.core import defaults
from pipeline.core.atomic import atomic_output_dir
from pipeline.core.dataset import (
    dataset_input_paths,
    read_manifest,
)
from pipeline.core.errors import UserError
from pipeline.core.outputs import claim_output
from pipeline.stages.audit_remediate import STAGE, decide, write_remediated
from pipeline.stages.audit_stream import dataset_stats, stream_stats
from pipeline.stages.parts import (
    check_scheduler,
)

REPORT = "audit-report"
SUMMARY = "summary.json"  # the DVC metrics file: headline numbers only


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
    deferred = []  # the unique-id check: run beside the gate
    cols = stream_stats(dataset, stats_path, sample, scheduler, deferred)
    (check_ids,) = deferred
    pixel_info = None
    if pixels:  # the images themselves, a second pass: judged by pixels where boxes are few
        check_ids()  # a repeated id stops the audit before this long pass
        check_ids = lambda: None
        from pipeline.stages.audit_pixels import PIXEL_SCORES, pixel_pass, pixel_table

        pixel_info = pixel_pass(dataset, cols, sample, scheduler)
        pq.write_table(pixel_table(cols), tmp / PIXEL_SCORES)
    ids_checked = _aside(check_ids)  # beside the gate
    ref = resolve_reference(reference, scheduler, pixels)
    result = gate(cols, ref, **knobs)
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


def _aside(step):
    """``step`` run on a thread, as a future whose ``result()`` raises what it raised.

    The unique-id check (NumPy hashes and sorts the ids without the GIL, 16 bytes an id
    at most) goes on beside the gate, which runs on one core: beside the report, whose
    figures encode on two threads, the check took 65-73 ms instead of 26 ms."""
    from concurrent.futures import ThreadPoolExecutor

    runner = ThreadPoolExecutor(1)
    running = runner.submit(step)
    runner.shutdown(wait=False)  # the submitted step still runs to its end
    return running
