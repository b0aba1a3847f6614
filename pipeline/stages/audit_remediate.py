"""What the audit does with the grid-like images it found: the remediation.

``filter`` drops them (rejected as ``grid_like``, their boxes ``parent_image_rejected``),
``split`` cuts the tiled ones back into their tiles (``pipeline.stages.audit_split``) and
drops the rest, ``downweight`` keeps every image and writes ``weights.parquet`` for the
trainer's sampler. Kept apart from the statistics and the gate (``pipeline.stages.audit``)
because this is the part that writes training data, part by part, and decides whether
any may be written at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from analysis.audit import downweight, family_of, gate
from pipeline.core import arrow_kernels as kernels
from pipeline.core import defaults
from pipeline.core.dataset import input_entry, n_boxes, read_manifest, read_part
from pipeline.core.dataset_writer import dataset_writer, write_extra
from pipeline.core.records import BOX, IMAGE, PARENT_IMAGE_REJECTED, reject_rows
from pipeline.stages.parts import parts_of

STAGE = "audit"
GRID_LIKE = "grid_like"
TILED_FAMILIES = ("mosaic", "mosaic_aug", "pixels")  # what --remediate split cuts into tiles


def subset(cols: dict, mask: np.ndarray) -> dict:
    """The rows of ``cols`` where ``mask`` holds."""
    keep = pa.array(mask)
    return {
        k: kernels.filter_rows(v, keep) if isinstance(v, (pa.Array, pa.ChunkedArray)) else v[mask]
        for k, v in cols.items()
    }


def decide(cols: dict, result: dict, ref: dict, knobs: dict, remediate: str, flagged, out: Path):
    """The remediation's record for audit.json, and what ``write_remediated`` needs:
    ``(rem, drop, weights, extra)``. The verdict after remediation is the gate run again
    on what training would see."""
    rem = {"mode": remediate}
    weights = None
    drop, extra = None, None  # the remediated dataset: written only if it may be trained on
    if remediate in ("filter", "split"):  # split: the tiles are the photos mosaics were made of
        after = gate(subset(cols, ~flagged), ref, **knobs)
        rem.update(images_removed=int(flagged.sum()), verdict_after=after["verdict"])
        drop = flagged
    elif remediate == "downweight":
        w = downweight(cols, flagged, result["reference"]["grid_share"])
        weights = pa.table({"image_id": cols["image_id"], "weight": w})
        judged = ~np.asarray(cols["low_evidence"], bool)
        eff = float(w[flagged].sum() / max(w[judged].sum(), 1e-12))
        over = eff - result["reference"]["grid_share"]
        rem.update(
            weights=str(out / "weights.parquet"),
            grid_like_weight=float(w[flagged].min()) if flagged.any() else 1.0,
            effective_share=eff,
            verdict_after="pass" if over <= knobs["max_grid_share"] else "fail",
        )
        extra = {"weights.parquet": weights}
    return rem, drop, weights, extra


def _grid_rejects(records: pa.Table, rows: np.ndarray, scores: np.ndarray) -> pa.Table:
    """``grid_like`` rows for the flagged images of one part and ``parent_image_rejected``
    rows for each of their boxes."""
    take = pa.array(rows, pa.int64())
    col = records.column
    lengths = np.asarray(
        kernels.fill_null(kernels.list_value_length(kernels.take(col("boxes"), take)), 0), np.int64
    )
    owner = np.repeat(rows, lengths)
    within = np.arange(owner.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    at = pa.array(owner, pa.int64())
    return pa.concat_tables(
        [
            reject_rows(
                stage=STAGE,
                source=kernels.take(col("source"), take),
                kind=IMAGE,
                image_id=kernels.take(col("image_id"), take),
                file=kernels.take(col("file"), take),
                box_index=[-1] * rows.size,
                reason=GRID_LIKE,
                detail=[f"grid_score={s:.3f}" for s in scores[rows]],
            ),
            reject_rows(
                stage=STAGE,
                source=kernels.take(col("source"), at),
                kind=BOX,
                image_id=kernels.take(col("image_id"), at),
                file=kernels.take(col("file"), at),
                box_index=within,
                reason=PARENT_IMAGE_REJECTED,
                detail="",
            ),
        ]
    )


def write_remediated(
    dataset: Path, out: Path, params: dict, cols: dict, flagged=None, extra=None, split=False
):
    """The audited records, part by part, into ``out``: all of them, or (``flagged``)
    without the grid-like images, which are rejected with their boxes; with ``split``
    the ones that can be are cut into their tiles (``pipeline.stages.audit_split``).
    Memory is one part, however large the dataset."""
    from pipeline.stages.audit_split import SPLIT, split_part, tile_sources

    manifest = read_manifest(dataset)
    sources = manifest.get("sources") or {}
    roots = {s: m.get("images_root") for s, m in sources.items()}
    if split:
        sources = {**sources, **tile_sources(sources, Path(out))}
    scores = np.asarray(cols["grid_score"], float)
    if split:  # only tile families: a lattice has free lines too, not tiles
        families, code = family_of(cols, params["threshold"])
        tiled_code = np.isin(np.asarray(families), TILED_FAMILIES)[code]
    images_in = boxes_in = start = tiles = 0
    with dataset_writer(
        out,
        stage=STAGE,
        inputs=[input_entry(dataset)],
        params=params,
        sources=sources,
    ) as writer:
        for part, rows in parts_of(dataset, manifest):
            records = read_part(dataset, part, None, rows)
            n = records.num_rows
            images_in, boxes_in = images_in + n, boxes_in + n_boxes(records)
            drop = None if flagged is None else flagged[start : start + n]
            rejects, made = None, None
            if drop is not None and drop.any():
                rows = np.flatnonzero(drop)
                split_rows, more = np.zeros(0, np.int64), []
                if split:
                    tiled = tiled_code[start : start + n][rows]
                    made, more, split_rows = split_part(
                        records, rows[tiled], roots, writer.tmp, defaults.MIN_BOX_AREA
                    )
                    tiles += 0 if made is None else made.num_rows
                rest = np.setdiff1d(rows, split_rows)
                grid = (
                    [_grid_rejects(records, rest, scores[start : start + n])] if rest.size else []
                )
                rejects = pa.concat_tables(grid + more) if grid or more else None
                records = kernels.filter_rows(records, pa.array(~drop))
            writer.add(records, rejects)
            if made is not None:
                writer.add(made)
            start += n
            del records, rejects
        for name, content in (extra or {}).items():
            write_extra(writer.tmp / name, content)
        return writer.finish(images_in, boxes_in, added={"images": {SPLIT: tiles}})
