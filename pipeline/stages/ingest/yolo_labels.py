"""YOLO/ultralytics label text: data.yaml, label files, and label lines to boxes.

``data.yaml`` is read as ultralytics reads it (``check_det_dataset``), so a dataset that
trains there ingests here: ``path`` is the dataset root, ``train``/``val``/``test`` are image
folders under it, and each image's labels sit where ``img2label_paths`` looks for them.

Label files are opened defensively, because a dataset folder is someone else's tree: a
symlink that leaves the labels root is never opened (its content must not leak into
``rejects.parquet``), and a file that cannot be read (a FIFO, a folder called ``x.txt``,
permission denied) is a reject reason, not a traceback or a hang.

Label lines are parsed as one batch for the whole dataset (token counts, then one NumPy
float conversion), so a bad line costs a reject row, not a file, and the same rules
apply to every line. A row is ``class cx cy w h`` (normalised), or a segment
``class x1 y1 x2 y2 ...`` (3+ points), whose box is the points' extent, as ultralytics
turns segments into boxes.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from pipeline.core import boxes as bx
from pipeline.core.errors import UserError
from pipeline.core.images import SYMLINK_OUTSIDE_ROOT, UNREADABLE

# Box reject reasons specific to YOLO labels (stable strings).
BAD_LABEL_LINE = "bad_label_line"
UNKNOWN_CLASS = "unknown_class"
DUPLICATE_BOX = "duplicate_box"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One folder of images and the folder its label files are looked up in."""

    name: str  # "train", "val", "test"; "" for the --images/--labels form
    images: Path
    labels: Path


def _read_yaml(p: Path, what: str) -> dict:
    if not p.is_file():
        raise UserError(f"{what} {p} does not exist (an ultralytics data.yaml with a 'names' key)")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{what} {p} is not readable YAML: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise UserError(f"{what} {p} is not readable YAML: nested too deeply") from None
    return doc if isinstance(doc, dict) else {}


def _names(doc: dict, p: Path, what: str) -> dict[int, str]:
    names = doc.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise UserError(f"{what} {p} has no 'names' list or mapping of class ids to names")
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
            raise UserError(f"{what} {p}: entry {k!r}: {v!r} is not 'class id: name'")
        out[key] = str(v)
    return out


def load_names(path: str | Path, what: str = "--names") -> dict[int, str]:
    """Class names from an ultralytics data.yaml: ``names`` as a list or an {id: name} map."""
    p = Path(path)
    return _names(_read_yaml(p, what), p, what)


def labels_dir_for(images: Path) -> Path:
    """Where ultralytics looks for the labels of the images in folder ``images``.

    ``img2label_paths`` replaces the last ``/images/`` of each image path with
    ``/labels/``; for the files of one folder that is its last ``images`` component. A
    folder without one keeps its labels beside the images. (An ``images`` folder *inside*
    the split folder is not looked at: groundset pairs per split folder.)
    """
    parts = images.parts
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] == "images":
            return Path(*parts[:i], "labels", *parts[i + 1 :])
    return images


def _split_dirs(key: str, value, root: Path, p: Path) -> list[Path]:
    """The image folders of one split entry, resolved as ``check_det_dataset`` does."""
    if isinstance(value, str):
        x = (root / value).resolve()
        if not x.exists() and value.startswith("../"):  # Roboflow writes ../train/images
            x = (root / value[3:]).resolve()
        dirs = [x]
    elif isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        dirs = [(root / v).resolve() for v in value]
    else:
        raise UserError(f"--data {p}: '{key}' is {value!r}, not a folder or a list of folders")
    for d in dirs:
        if d.is_file():
            raise UserError(
                f"--data {p}: '{key}' is the file {d}; image lists (.txt) are not supported, "
                "give image folders (or a list of folders)"
            )
        if not d.is_dir():
            raise UserError(f"--data {p}: '{key}' folder {d} does not exist (dataset root {root})")
    return dirs


def load_data(path: str | Path) -> tuple[Path, list[Split], dict[int, str]]:
    """Dataset root, splits (train, val, test order) and names of an ultralytics data.yaml.

    ``path`` is the dataset root, relative to the yaml's folder (ultralytics would try the
    working directory and its datasets folder; a yaml that travels with its dataset is
    the case worth supporting), and the yaml's folder when absent. A split may be a folder
    or a list of folders. The same folder listed twice (ultralytics' coco128.yaml uses
    ``images/train2017`` for both train and val) is read once, under its first split.
    """
    p = Path(path)
    doc = _read_yaml(p, "--data")
    names = _names(doc, p, "--data")
    base = p.absolute().parent
    given = doc.get("path")
    if given is not None and not isinstance(given, str):
        raise UserError(f"--data {p}: 'path' is {given!r}, not a folder")
    root = (base / given).resolve() if given else base.resolve()
    if "val" not in doc and "validation" in doc:  # ultralytics renames it too
        doc["val"] = doc["validation"]
    splits, seen = [], set()
    for key in SPLITS:
        if not doc.get(key):
            continue
        for d in _split_dirs(key, doc[key], root, p):
            if d not in seen:
                seen.add(d)
                splits.append(Split(key, d, labels_dir_for(d)))
    if not splits:
        raise UserError(f"--data {p} names no 'train', 'val' or 'test' image folder")
    for s in splits:
        if not s.labels.is_dir():
            raise UserError(
                f"--data {p}: no labels folder {s.labels} for the {s.name} images in {s.images} "
                "(ultralytics' rule: the last /images/ of the path becomes /labels/)"
            )
    return root, splits, names


def open_label(path: Path, real_root: Path) -> tuple[bytes | None, str | None, str | None]:
    """Read one label file: ``(content, None, None)``, ``(None, None, None)`` when there is
    none, or ``(None, reason, detail)`` when it must not or cannot be read.

    The path is resolved before opening, so a symlink (of the file or of a folder above
    it) that leaves ``real_root`` is refused unread. ``O_NONBLOCK`` and the ``fstat`` check
    keep a FIFO from blocking the run.
    """
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None, None, None
    except OSError as e:
        return None, UNREADABLE, f"label file {path}: {e.strerror}"
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(real_root):
        return None, SYMLINK_OUTSIDE_ROOT, f"label file {path} points outside the labels root"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        return None, UNREADABLE, f"label file {path}: {e.strerror}"
    try:
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None, UNREADABLE, f"label file {path} is not a regular file"
            return f.read(), None, None
    except OSError as e:
        return None, UNREADABLE, f"label file {path}: {e.strerror}"


def text_lines(data: bytes) -> list[str]:
    """Non-blank lines; a BOM is dropped and undecodable bytes become U+FFFD (-> bad line)."""
    text = data.decode("utf-8-sig", errors="replace")
    return [line for line in text.splitlines() if line.strip()]


def txt_files(root: Path) -> list[str]:
    """Relative paths of the ``.txt`` entries under ``root`` (hidden ones skipped; folder
    symlinks not followed), whatever they are: the candidates for label files."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [
            (rel / f).as_posix()
            for f in dirnames + filenames
            if f.endswith(".txt") and not f.startswith(".")
        ]
    return sorted(out)


def label_like(lines: list[str]) -> int:
    """How many lines have the shape of a YOLO label line: 5 numbers, or an odd count
    of 7 or more (a segment). A README sentence has words, so it does not count."""
    tokens = [line.split() for line in lines]
    ntok = np.fromiter(map(len, tokens), np.int64, count=len(tokens))
    rows = np.flatnonzero((ntok == 5) | ((ntok >= 7) & (ntok % 2 == 1)))
    if not rows.size:
        return 0
    finite = np.isfinite(_floats([t for i in rows for t in tokens[i]]))
    starts = np.concatenate([[0], np.cumsum(ntok[rows])[:-1]])
    return int(np.logical_and.reduceat(finite, starts).sum())


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
