"""YOLO/ultralytics label text: class names from data.yaml and label lines to boxes.

Label lines are parsed as one batch for the whole dataset (token counts, then one NumPy
float conversion), so a bad line costs a reject row, not a file, and the same rules
apply to every line. A row is ``class cx cy w h`` (normalised), or a segment
``class x1 y1 x2 y2 ...`` (3+ points), whose box is the points' extent, as ultralytics
turns segments into boxes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from pipeline.core import boxes as bx
from pipeline.core.errors import UserError

# Box reject reasons specific to YOLO labels (stable strings).
BAD_LABEL_LINE = "bad_label_line"
UNKNOWN_CLASS = "unknown_class"
DUPLICATE_BOX = "duplicate_box"


def load_names(path: str | Path) -> dict[int, str]:
    """Class names from an ultralytics data.yaml: ``names`` as a list or an {id: name} map."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--names {p} does not exist (an ultralytics data.yaml with a 'names' key)")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"--names {p} is not readable YAML: {str(e).splitlines()[0]}") from None
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise UserError(f"--names {p} has no 'names' list or mapping of class ids to names")
    out = {}
    for k, v in names.items():
        try:
            key = int(k)
        except (TypeError, ValueError):
            key = None
        if (
            key is None
            or key < 0
            or isinstance(k, bool)
            or not isinstance(v, (str, int))
            or v == ""
        ):
            raise UserError(f"--names {p}: entry {k!r}: {v!r} is not 'class id: name'")
        out[key] = str(v)
    return out


def _floats(tokens: list[str]) -> np.ndarray:
    """Parse tokens as floats; unparseable tokens become NaN (so their row is rejected)."""
    try:
        return np.array(tokens, dtype=np.float64)
    except ValueError:
        pass

    def one(t: str) -> float:
        try:
            return float(t)
        except ValueError:
            return np.nan

    return np.fromiter(map(one, tokens), np.float64, count=len(tokens))


def parse_lines(lines: list[str], owner: np.ndarray, class_ids: np.ndarray) -> dict:
    """Boxes for label lines owned by images ``owner`` (same length as ``lines``).

    Returns ``cls`` (index into sorted ``class_ids``, -1 if unknown), ``xyxy`` (clipped,
    normalised float32), ``reason`` (object array, None = kept) and ``detail``.
    """
    n = len(lines)
    tokens = [line.split() for line in lines]
    ntok = np.fromiter(map(len, tokens), np.int64, count=n)
    is_box = ntok == 5
    is_seg = (ntok >= 7) & (ntok % 2 == 1)
    reason = np.full(n, None, object)

    raw = np.full((n, 4), np.nan)  # unclipped x0 y0 x1 y1
    cls = np.full(n, np.nan)
    rows = np.flatnonzero(is_box)
    if rows.size:
        v = _floats([t for i in rows for t in tokens[i]]).reshape(-1, 5)
        cls[rows] = v[:, 0]
        with np.errstate(invalid="ignore"):
            raw[rows] = np.stack(bx.cxcywh_to_xyxy(*v[:, 1:].T), axis=1)
            flipped = (v[:, 3] <= 0) | (v[:, 4] <= 0)  # negative w/h: no area, as ultralytics
        reason[rows[flipped & np.isfinite(v).all(axis=1)]] = bx.ZERO_AREA
    seg = np.flatnonzero(is_seg)
    if seg.size:
        flat = _floats([t for i in seg for t in tokens[i][1:]])
        cls[seg] = _floats([tokens[i][0] for i in seg])
        npts = (ntok[seg] - 1) // 2
        starts = np.concatenate([[0], np.cumsum(npts)[:-1]])
        xs, ys = flat[0::2], flat[1::2]
        bad = np.add.reduceat(~np.isfinite(xs) | ~np.isfinite(ys), starts) > 0
        with np.errstate(invalid="ignore"):
            raw[seg] = np.stack(
                [
                    np.minimum.reduceat(xs, starts),
                    np.minimum.reduceat(ys, starts),
                    np.maximum.reduceat(xs, starts),
                    np.maximum.reduceat(ys, starts),
                ],
                1,
            )
        raw[seg[bad]] = np.nan

    ones = np.ones(n)
    xyxy, geo = bx.clip_xyxy_pixels(*raw.T, ones, ones)
    reason[reason == None] = geo[reason == None]
    with np.errstate(invalid="ignore"):
        integral = np.isfinite(cls) & (cls == np.floor(cls)) & (cls >= 0)
    pos = np.searchsorted(class_ids, np.where(integral, cls, -1))
    pos = np.minimum(pos, max(class_ids.size - 1, 0))
    known = integral & (class_ids.size > 0) & (class_ids[pos] == cls)
    reason[~known & (is_box | is_seg)] = UNKNOWN_CLASS
    reason[~(is_box | is_seg)] = BAD_LABEL_LINE

    # ultralytics drops repeated rows of one image; the first copy is kept.
    keys = pa.array([f"{o} {' '.join(t)}" for o, t in zip(owner.tolist(), tokens)], pa.string())
    codes = np.asarray(keys.dictionary_encode().indices)
    first = np.unique(codes, return_index=True)[1]
    dup = np.ones(n, bool)
    dup[first] = False
    reason[dup & (reason == None)] = DUPLICATE_BOX

    detail = np.full(n, None, object)
    for i in np.flatnonzero(reason != None):  # rejected lines only
        detail[i] = f"line {lines[i][:200]!r}"
    return {"cls": np.where(known, pos, -1), "xyxy": xyxy, "reason": reason, "detail": detail}
