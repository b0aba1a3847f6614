"""``export gligen-tsv``: the TSV layout GLIGEN's own training code reads.

GLIGEN (``DATA/mydata_to_tsv.py`` writes it, ``dataset/tsv_dataset.py`` reads it) keeps
one image per line: ``data_id<TAB>json``, plus a ``.lineidx`` file beside it holding each
line's byte offset (``TSVFile`` seeks with it). The JSON item is::

    {"data_id", "file_name", "caption", "is_det", "image": base64 JPEG,
     "annos": [{"id", "data_id", "bbox": [x, y, w, h] pixels, "tokens_positive": [[s, e]],
                "category_name", "phrase",
                "text_embedding_before" / "text_embedding_after": base64 float32}]}

Choices where our records and GLIGEN's data differ, written down:

- ``caption`` is the image's first caption. An image without captions gets GLIGEN's own
  detection-data caption, the phrases joined by ", " (``make_a_sentence``), and
  ``is_det: true``, as GLIGEN marks Objects365 items.
- ``tokens_positive`` is the character span of the phrase's first whole-word,
  case-insensitive occurrence in the caption, plural included (``spans``); a phrase the
  caption does not contain as a word gets ``[]`` (the caption is never rewritten, since
  it conditions the UNet, and GLIGEN's ``TSVDataset`` grounds with the phrase's text
  embedding, not the span), and the phrase itself stays in ``phrase``.
- One split per file, ``train`` by default: GLIGEN trains on every line of its TSV,
  so curate's held-out ``val`` images stay out unless asked for.
- Text embeddings are written only when a text encoder is given; image embeddings
  (GLIGEN's image-grounded variant) are never written.
- JPEG files are embedded byte for byte; other formats are re-encoded as JPEG, as
  GLIGEN's writer does.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

from pipeline.core.atomic import atomic_path, scratch_dir
from pipeline.core.errors import UserError
from pipeline.core.outputs import check_inputs, claim_output, remove_leftovers
from pipeline.core.progress import progress
from pipeline.stages.export.common import check_whole, load_meta
from pipeline.stages.export.gligen_tsv_parts import check_split, count_part, tsv_part
from pipeline.stages.parts import check_scheduler, map_parts, parts_of

DEFAULT_SPLIT = "train"  # GLIGEN trains on the whole TSV it is given; curate holds val out


def lineidx_path(out: Path) -> Path:
    return Path(os.path.splitext(out)[0] + ".lineidx")


def _check_out(out: Path, inputs: list) -> Path:
    """The ``.lineidx`` path beside ``out``, refused where it cannot be written."""
    idx = lineidx_path(out)
    if idx == out:
        raise UserError(f"--out {out} would be its own .lineidx; give a .tsv file name")
    if idx.is_dir():
        raise UserError(f"{idx} is a folder; GLIGEN's index of {out} goes there")
    check_inputs(idx, inputs)
    return idx


def export_gligen_tsv(
    dataset: str | Path,
    out: str | Path,
    text_encoder=None,
    *,
    split: str = DEFAULT_SPLIT,
    scheduler: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write GLIGEN's TSV (and its ``.lineidx``) of one split to ``out``; returns the TSV path.

    ``split`` is ``train`` by default, since GLIGEN trains on what it is given and curate
    holds ``val`` out; ``all`` writes both. The records are read part by part, so memory
    is set by the part size (a part's distinct phrases are embedded with that part): a
    first pass counts each part's boxes (annotation ids run on across parts) and checks
    the whole dataset, the second builds each part's lines (``gligen_tsv_parts``), here
    or as dask tasks (``scheduler``, ``map_parts``). In process they write into the TSV
    one after the other; dask tasks write spill files beside ``out`` that this process
    appends in order. On a cluster the workers must share this filesystem: they read the
    dataset, the images and the text encoder, and write the spill files.
    """
    check_split(split)
    check_scheduler(scheduler)
    ds = load_meta(dataset)
    out = Path(out)
    inputs = [*ds.input_paths(), text_encoder]
    with claim_output(
        out, kind="export-gligen-tsv", inputs=inputs, overwrite=overwrite, is_file=True
    ):
        idx = _check_out(out, inputs)
        encoder = None
        if text_encoder is not None:  # a wrong folder is one line before any work
            from pipeline.stages.export.text_embed import resolve

            resolve(text_encoder)
            encoder = os.path.abspath(text_encoder)
        remove_leftovers(idx)  # temp index files of a killed run
        root = Path(os.path.abspath(ds.path))  # tasks may run in another working folder
        parts = [(root, *p) for p in parts_of(root, ds.manifest)]
        index = list(map_parts(count_part, [(*p, split) for p in parts], scheduler))
        check_whole(ds, [i.pop("digests") for i in index], sum(i["boxes"] for i in index))
        seen, chosen = sum(i["rows"] for i in index), sum(i["chosen"] for i in index)
        if chosen == 0 and seen:
            raise UserError(
                f"export gligen-tsv: {ds.path} has no {split} images (of "
                f"{seen}); curate sets the split, or pass --split all"
            )
        first = np.cumsum([1] + [i["chosen_boxes"] for i in index])
        total = (ds.manifest.get("counts") or {}).get("images_kept")
        bar = progress(total=total, desc="export gligen-tsv", unit="img")
        # Publish so that no moment shows a .tsv with another run's .lineidx: drop the
        # old index, rename the TSV into place, then its index. A kill in between leaves
        # a .tsv alone, which GLIGEN's TSVFile refuses (no .lineidx) or rebuilds
        # (``if_generate_lineidx=True``), and which the next export replaces. The two
        # blocks end right to left: the TSV's rename first, then the index's.
        with atomic_path(idx) as idx_tmp, atomic_path(out) as tsv_tmp, scratch_dir(out) as spill:
            pos, written, boxes, spans = 0, 0, 0, 0
            with open(tsv_tmp, "wb") as tsv, open(idx_tmp, "w") as lineidx:
                args = [  # in process, in order: straight into the TSV (no second copy)
                    (
                        *p,
                        split,
                        int(first[k]),
                        encoder,
                        spill / f"{k:06d}.tsv" if scheduler else tsv,
                    )
                    for k, p in enumerate(parts)
                ]
                for k, done in enumerate(map_parts(tsv_part, args, scheduler)):
                    if scheduler:
                        _append(tsv, args[k][-1])
                    offsets = pos + np.cumsum(done["lengths"]) - done["lengths"]
                    lineidx.write("".join(f"{o}\n" for o in offsets.tolist()))
                    pos += int(done["lengths"].sum())
                    written += done["written"]
                    boxes += done["boxes"]
                    spans += done["spans"]
                    bar.update(index[k]["rows"])
            bar.close()
            if written == 0 and chosen:
                raise UserError(
                    f"export gligen-tsv: none of the {chosen} {split} images of "
                    f"{ds.path} exists under its source's images root (ingest with --images-root)"
                )
            idx.unlink(missing_ok=True)
        if text_encoder is None:  # said even with --quiet: the output lacks what GLIGEN reads
            # (after the export, so a dataset refused on read gets its one error line only)
            print(
                "export gligen-tsv: no --text-encoder given, so annos carry no "
                "text_embedding_before/after (GLIGEN's loader needs them; pass a CLIP folder)",
                file=sys.stderr,
            )
        # a summary: said even with --quiet, which hides progress bars only
        missing = chosen - written
        skipped = f"; {missing} skipped (image file missing)" if missing else ""
        print(
            f"export gligen-tsv: {written} {split} images, {boxes} "
            f"boxes ({spans} with a span in the caption){skipped} -> {out}"
        )
        return out


def _append(tsv, spill: Path) -> None:
    """Append a part's spill file to the TSV, in the kernel where it can
    (``copy_file_range``: no copy through this process), then remove it."""
    tsv.flush()
    with open(spill, "rb") as f:
        left = os.fstat(f.fileno()).st_size
        try:
            while left > 0:
                n = os.copy_file_range(f.fileno(), tsv.fileno(), left)
                if n == 0:
                    break
                left -= n
        except OSError:  # another filesystem or kernel: both positions moved as copied
            pass
        shutil.copyfileobj(f, tsv.raw, 1 << 20)
    spill.unlink()
