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

import base64
import io
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.atomic import atomic_path
from pipeline.core.errors import UserError
from pipeline.core.image_header import orientation
from pipeline.core.images import read_rgb
from pipeline.core.outputs import check_inputs, claim_output, remove_leftovers
from pipeline.core.progress import progress
from pipeline.core.records import flatten_boxes
from pipeline.stages.export.common import iter_parts, join_cols, load_meta, num_str
from pipeline.stages.export.spans import STR, word_spans

CHUNK = 256  # images read and encoded at a time (bounds memory, keeps threads busy)
SPLITS = ("train", "val", "all")
DEFAULT_SPLIT = "train"  # GLIGEN trains on the whole TSV it is given; curate holds val out


def _jpeg_b64(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    data = path.read_bytes()
    if data[:3] != b"\xff\xd8\xff" or not _upright(data):
        # GLIGEN's reader decodes without the EXIF orientation, and the boxes are in
        # displayed orientation: such images are stored with the rotation applied
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(read_rgb(path)).save(buf, format="JPEG", quality=95)
        data = buf.getvalue()
    return base64.b64encode(data).decode("ascii")


def _upright(jpeg: bytes) -> bool:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(jpeg)) as im:
            return orientation(im) in (None, 1)
    except (OSError, ValueError, SyntaxError):
        return True  # not decodable here; passed through as the original bytes


def _json_strings(values: pa.Array) -> pa.Array:
    """JSON-escaped string literals, encoding each distinct value once."""
    enc = (
        pc.dictionary_encode(values).combine_chunks()
        if isinstance(values, pa.ChunkedArray)
        else pc.dictionary_encode(values)
    )
    escaped = pa.array([json.dumps(v) for v in enc.dictionary.to_pylist()], pa.string())
    return escaped.take(enc.indices)


def _b64_rows(matrix: np.ndarray) -> pa.Array:
    """base64 of each float32 row (GLIGEN's ``encode_tensor_as_string``)."""
    rows = np.ascontiguousarray(matrix, dtype="<f4")
    return pa.array([base64.b64encode(r.tobytes()).decode("ascii") for r in rows], pa.string())


def captions_and_spans(
    records: pa.Table, fb
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Caption per image, ``is_det`` per image, and each box's [start, end) span (-1 if absent)."""
    cap_lists = records.column("captions").to_pylist()
    has_caption = np.array([bool(c) for c in cap_lists], dtype=bool)
    phrase_len = np.asarray(pc.utf8_length(fb.phrase).fill_null(0), dtype=np.int64)
    # Detection-style caption: phrases joined by ", "; spans follow from the lengths.
    csum = np.concatenate([[0], np.cumsum(phrase_len + 2)])
    det_start = csum[:-1] - csum[fb.offsets[:-1]][fb.image]
    phrases = fb.phrase.to_pylist()
    off = fb.offsets
    captions = [  # per image
        cap_lists[i][0] if has_caption[i] else ", ".join(phrases[off[i] : off[i + 1]])
        for i in range(records.num_rows)
    ]
    start, end = det_start, det_start + phrase_len
    real = np.flatnonzero(has_caption[fb.image])  # boxes whose image has a real caption
    if real.size:
        start[real], end[real] = word_spans(
            np.array(captions, dtype=STR), fb.image[real], fb.phrase.take(pa.array(real))
        )
    return captions, ~has_caption, start, end


def _annos(
    rec: pa.Table, fb, start: np.ndarray, end: np.ndarray, emb: dict | None, first_id: int = 1
) -> list[str]:
    n = fb.image.size
    if n == 0:
        return []
    xywh = fb.pixel_xywh(rec.column("width").to_numpy(), rec.column("height").to_numpy())
    data_id = _json_strings(rec.column("image_id").combine_chunks()).take(pa.array(fb.image))
    span = pc.if_else(
        pa.array(start >= 0), join_cols("[[", num_str(start), ",", num_str(end), "]]"), "[]"
    )
    parts = [
        '{"id":',
        num_str(np.arange(first_id, first_id + n)),
        ',"data_id":',
        data_id,
        ',"bbox":[',
        num_str(xywh[:, 0]),
        ",",
        num_str(xywh[:, 1]),
        ",",
        num_str(xywh[:, 2]),
        ",",
        num_str(xywh[:, 3]),
        '],"tokens_positive":',
        span,
        ',"category_name":',
        _json_strings(fb.category),
        ',"phrase":',
        _json_strings(fb.phrase),
    ]
    if emb is not None:
        idx = pa.array(emb["index"])
        parts += [',"text_embedding_before":"', _b64_rows(emb["before"]).take(idx), '"']
        if emb["after"] is not None:
            parts += [',"text_embedding_after":"', _b64_rows(emb["after"]).take(idx), '"']
    parts.append("}")
    return join_cols(*parts).to_pylist()


def _embeddings(fb, text_encoder) -> dict | None:
    if text_encoder is None:
        return None
    from pipeline.stages.export.text_embed import embed_phrases

    enc = pc.dictionary_encode(fb.phrase)
    out = embed_phrases(enc.dictionary.to_pylist(), text_encoder)
    out["index"] = np.asarray(enc.indices)
    return out


def lineidx_path(out: Path) -> Path:
    return Path(os.path.splitext(out)[0] + ".lineidx")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def select_split(records: pa.Table, split: str) -> pa.Table:
    """The images of one split, as ``export yolo`` splits them: ``val`` is what curate
    marked val, ``train`` everything else (an uncurated dataset is all train)."""
    check_split(split)
    if split == "all":
        return records
    is_val = pc.fill_null(pc.equal(records.column("split"), "val"), False)
    return records.filter(is_val if split == "val" else pc.invert(is_val))


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
    overwrite: bool = False,
) -> Path:
    """Write GLIGEN's TSV (and its ``.lineidx``) of one split to ``out``; returns the TSV path.

    ``split`` is ``train`` by default, since GLIGEN trains on what it is given and curate
    holds ``val`` out; ``all`` writes both. The records are read part by part, each part's
    lines appended as it is done, so memory is set by the part size (a part's distinct
    phrases are embedded with that part).
    """
    check_split(split)
    ds = load_meta(dataset)
    out = Path(out)
    inputs = [*ds.input_paths(), text_encoder]
    with claim_output(
        out, kind="export-gligen-tsv", inputs=inputs, overwrite=overwrite, is_file=True
    ):
        idx = _check_out(out, inputs)
        remove_leftovers(idx)  # temp index files of a killed run
        total = (ds.manifest.get("counts") or {}).get("images_kept")
        bar = progress(total=total, desc="export gligen-tsv", unit="img")
        # Publish so that no moment shows a .tsv with another run's .lineidx: drop the
        # old index, rename the TSV into place, then its index. A kill in between leaves
        # a .tsv alone, which GLIGEN's TSVFile refuses (no .lineidx) or rebuilds
        # (``if_generate_lineidx=True``), and which the next export replaces. The two
        # blocks end right to left: the TSV's rename first, then the index's.
        with atomic_path(idx) as idx_tmp, atomic_path(out) as tsv_tmp:
            with (
                open(tsv_tmp, "wb") as tsv,
                open(idx_tmp, "w") as lineidx,
                ThreadPoolExecutor(4) as pool,
            ):
                sink = _Sink(tsv, lineidx, pool)
                seen = 0
                for part in iter_parts(ds):
                    seen += part.num_rows
                    _export_part(ds, select_split(part, split), text_encoder, sink)
                    bar.update(part.num_rows)
            bar.close()
            if sink.rows == 0 and seen:
                raise UserError(
                    f"export gligen-tsv: {ds.path} has no {split} images (of "
                    f"{seen}); curate sets the split, or pass --split all"
                )
            if sink.written == 0 and sink.rows:
                raise UserError(
                    f"export gligen-tsv: none of the {sink.rows} {split} images of "
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
        missing = sink.rows - sink.written
        skipped = f"; {missing} skipped (image file missing)" if missing else ""
        print(
            f"export gligen-tsv: {sink.written} {split} images, {sink.boxes} "
            f"boxes ({sink.spans} with a span in the caption){skipped} -> {out}"
        )
        return out


class _Sink:
    """The open TSV and index files and what has been written to them so far."""

    def __init__(self, tsv, lineidx, pool) -> None:
        self.tsv, self.lineidx, self.pool = tsv, lineidx, pool
        self.pos = self.rows = self.written = self.boxes = self.spans = 0
        self.next_anno = 1  # annotation ids run on across parts


def _export_part(ds, rec: pa.Table, text_encoder, sink: _Sink) -> None:
    fb = flatten_boxes(rec)
    emb = _embeddings(fb, text_encoder)
    captions, is_det, start, end = captions_and_spans(rec, fb)
    annos = _annos(rec, fb, start, end, emb, first_id=sink.next_anno)
    paths = [
        ds.image_path(s, f)
        for s, f in zip(rec.column("source").to_pylist(), rec.column("file").to_pylist())
    ]
    written = _write_rows(sink, rec, fb, captions, is_det, annos, paths)
    sink.next_anno += fb.image.size
    sink.rows += rec.num_rows
    sink.written += int(written.sum())
    sink.boxes += int(np.diff(fb.offsets)[written].sum())
    sink.spans += int(np.bincount(fb.image[start >= 0], minlength=rec.num_rows)[written].sum())


def _write_rows(sink: _Sink, rec, fb, captions, is_det, annos, paths) -> np.ndarray:
    """Append one line per image whose file exists, and its byte offset to the index;
    returns which rows were written."""
    ids = rec.column("image_id").to_pylist()
    files = rec.column("file").to_pylist()
    off = fb.offsets
    written = np.zeros(rec.num_rows, bool)
    for c in range(0, rec.num_rows, CHUNK):
        rows = range(c, min(c + CHUNK, rec.num_rows))
        for i, image in zip(rows, sink.pool.map(_jpeg_b64, paths[c : c + CHUNK])):
            if image is None:
                continue
            head = json.dumps(
                {
                    "data_id": ids[i],
                    "file_name": files[i],
                    "caption": captions[i],
                    "is_det": bool(is_det[i]),
                }
            )
            item = (
                head[:-1]
                + ',"annos":['
                + ",".join(annos[off[i] : off[i + 1]])
                + '],"image":"'
                + image
                + '"}'
            )
            key = " ".join(ids[i].split())  # TSV column: no tabs or newlines
            line = (key + "\t" + item + "\n").encode("utf-8")
            sink.lineidx.write(f"{sink.pos}\n")
            sink.pos += len(line)
            sink.tsv.write(line)
            written[i] = True
    return written
