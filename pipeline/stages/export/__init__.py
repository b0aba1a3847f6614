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
    ``scheduler`` (dask, one task per records part) is coco's alone: yolo's and
    gligen-tsv's per-part work is writing links, label files and image bytes here.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if split is not None and fmt != "gligen-tsv":
        raise UserError(
            f"--split only applies to gligen-tsv; {fmt} keeps every image and its split"
        )
    if scheduler is not None and fmt != "coco":
        raise UserError(f"--scheduler only applies to coco; {fmt} writes its files here")
    if fmt == "coco":
        from pipeline.stages.export.coco import export_coco

        return export_coco(dataset, out, scheduler=scheduler, overwrite=overwrite)
    if fmt == "yolo":
        from pipeline.stages.export.yolo import export_yolo

        return export_yolo(dataset, out, overwrite=overwrite)
    if fmt == "gligen-tsv":
        from pipeline.stages.export.gligen_tsv import export_gligen_tsv

        kw = {} if split is None else {"split": split}
        return export_gligen_tsv(dataset, out, text_encoder=text_encoder, overwrite=overwrite, **kw)
    raise AssertionError(fmt)  # every name in FORMATS is handled above
