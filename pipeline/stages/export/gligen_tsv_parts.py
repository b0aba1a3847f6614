"""``export gligen-tsv``'s work on one records part: a function each, so that the parts
can run as dask tasks (``--scheduler``) and the client only appends their lines in order.

Pass 1 (``count_part``) counts each part's images and boxes in the split, so the client
can hand every part its first annotation id (ids run on across parts) and check the
whole dataset before writing. Pass 2 (``tsv_part``) builds a part's TSV lines (boxes,
spans and text embeddings column-wise; image bytes read on 4 threads) and writes them
``CHUNK`` images at a time (a part of 200,000 images is tens of GB of base64): straight
into the TSV when the parts run in this process, one after the other; else into a spill
file per part beside the output, which the client appends to the TSV in part order. The
client writes the ``.lineidx`` from the returned line lengths, so the output is the
same bytes wherever the parts ran.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core import arrow_kernels as kernels
from pipeline.core.dataset import BOX_COORDS, read_part
from pipeline.core.errors import UserError
from pipeline.core.image_header import orientation
from pipeline.core.images import read_rgb
from pipeline.core.records import flatten_boxes
from pipeline.stages.export.common import join_cols, load_meta, num_str, part_index, xywh_numbers
from pipeline.stages.export.spans import STR, word_spans

CHUNK = 256  # images read and encoded at a time (bounds memory, keeps threads busy)
SPLITS = ("train", "val", "all")


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


def count_part(path: Path, part: Path, rows: int | None, split: str) -> dict:
    """Pass 1 on one part: its rows, and the images and boxes in ``split`` (whose box
    count moves the next part's first annotation id), with ``part_index``."""
    rec = read_part(path, part, ["image_id", "split", "boxes"], rows, BOX_COORDS)
    chosen = select_split(rec, split)
    lengths = pc.list_value_length(chosen.column("boxes"))
    return {
        "rows": rec.num_rows,
        "chosen": chosen.num_rows,
        "chosen_boxes": int(pc.sum(lengths).as_py() or 0),
        **part_index(rec),
    }


def tsv_part(
    path: Path,
    part: Path,
    rows: int | None,
    split: str,
    first_id: int,
    text_encoder: str | None,
    dest: Path | BinaryIO,
) -> dict:
    """Pass 2 on one part: its lines of ``split`` written to ``dest`` (the open TSV, in
    process, or a spill file to create); returns each written line's length in bytes
    (for the ``.lineidx``) and the part's counts."""
    ds = load_meta(path)  # each source's images root
    rec = select_split(read_part(path, part, None, rows), split)
    fb = flatten_boxes(rec)
    emb = _embeddings(fb, text_encoder)
    captions, is_det, start, end = captions_and_spans(rec, fb)
    annos = _annos(rec, fb, start, end, emb, first_id=first_id)
    paths = [
        ds.image_path(s, f)
        for s, f in zip(rec.column("source").to_pylist(), rec.column("file").to_pylist())
    ]
    with contextlib.ExitStack() as files, ThreadPoolExecutor(4) as pool:
        out = files.enter_context(open(dest, "wb")) if isinstance(dest, Path) else dest
        lengths, written = _write_rows(out, pool, rec, fb, captions, is_det, annos, paths)
    spans = np.bincount(fb.image[start >= 0], minlength=rec.num_rows)
    return {
        "lengths": lengths,
        "written": int(written.sum()),
        "boxes": int(np.diff(fb.offsets)[written].sum()),
        "spans": int(spans[written].sum()),
    }


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
    enc = kernels.one_array(pc.dictionary_encode(values))
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
        *xywh_numbers(xywh),
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


def _write_rows(out, pool, rec, fb, captions, is_det, annos, paths) -> tuple:
    """Write one line per image whose file exists; returns the lines' lengths in bytes
    and which rows were written."""
    ids = rec.column("image_id").to_pylist()
    files = rec.column("file").to_pylist()
    off = fb.offsets
    written = np.zeros(rec.num_rows, bool)
    lengths = []
    for c in range(0, rec.num_rows, CHUNK):
        rows = range(c, min(c + CHUNK, rec.num_rows))
        for i, image in zip(rows, pool.map(_jpeg_b64, paths[c : c + CHUNK])):
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
            out.write(line)
            lengths.append(len(line))
            written[i] = True
    return np.array(lengths, np.int64), written
