"""The export stage: hand a groundset dataset to other tools in their own formats.

One module per format; each is imported only when asked for, so exporting COCO JSON
never loads a text encoder.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import UserError

FORMATS = ("coco", "yolo", "gligen-tsv")


def export(
    fmt: str,
    dataset: str | Path,
    out: str | Path,
    text_encoder=None,
    *,
    split: str | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Dispatch to one exporter; returns the main output path.

    ``split`` (train, val or all) is gligen-tsv's alone: a COCO export keeps every image
    with its ``split`` field, and a YOLO export writes both splits as ultralytics wants.
    ``scheduler`` (dask: threads, processes, synchronous or a ``tcp://`` cluster) runs
    each pass over the records parts as one task per part (``stages.parts.map_parts``),
    with the same output as in process. coco's tasks return bytes that this process
    writes; yolo's write their label files and links into the staging folder, and
    gligen-tsv's their lines into spill files beside the output that this process
    appends, so a cluster's workers must share the filesystem (as they must to read the
    dataset).
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if split is not None and fmt != "gligen-tsv":
        raise UserError(
            f"--split only applies to gligen-tsv; {fmt} keeps every image and its split"
        )
    if fmt == "coco":
        from pipeline.stages.export.coco import export_coco

        return export_coco(dataset, out, scheduler=scheduler, overwrite=overwrite)
    if fmt == "yolo":
        from pipeline.stages.export.yolo import export_yolo

        return export_yolo(dataset, out, scheduler=scheduler, overwrite=overwrite)
    if fmt == "gligen-tsv":
        from pipeline.stages.export.gligen_tsv import export_gligen_tsv

        kw = {} if split is None else {"split": split}
        return export_gligen_tsv(
            dataset, out, text_encoder=text_encoder, scheduler=scheduler, overwrite=overwrite, **kw
        )
    raise AssertionError(fmt)  # every name in FORMATS is handled above
