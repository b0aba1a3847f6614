"""``export yolo``: a dataset directory as an ultralytics detection dataset.

Layout, as ``yolo train data=...`` expects it::

    OUT/data.yaml               path, train, val, names
    OUT/images/{train,val}/*    links to the source images (hard link, else symlink, else copy)
    OUT/labels/{train,val}/*.txt  one "class cx cy w h" line per box, normalised

Ultralytics finds a label by replacing the last ``/images/`` of an image path with
``/labels/``, so image names are flattened (``a/b.jpg`` -> ``a__b.jpg``, prefixed by the
source when there are several): a nested name holding ``images`` would otherwise send
the labels astray. Images marked ``val`` (by ``curate``) go to val, all others to
train; a dataset without val images uses train for both and says so.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from pipeline.core.atomic import atomic_output_dir
from pipeline.core.dataset import BOX_COORDS, read_part
from pipeline.core.errors import UserError
from pipeline.core.hashing import first_rows, string_digests
from pipeline.core.outputs import claim_output
from pipeline.core.progress import progress
from pipeline.core.records import flatten_boxes
from pipeline.stages.export.common import (
    category_table,
    check_whole,
    link_or_copy,
    load_meta,
    part_index,
)
from pipeline.stages.parts import check_scheduler, map_parts, parts_of

KIND = "export-yolo"
DATA_YAML = "data.yaml"
NAME_FIELDS = (*BOX_COORDS, "category")  # what pass 1 reads of each box


def flat_names(
    sources: list[str], files: list[str], multi=None, repeated=None, start: int = 0
) -> list[str]:
    """Unique, directory-free image names (collisions get a ``-<row>`` suffix).

    ``multi`` (prefix the source) defaults to whether ``sources`` holds several;
    ``repeated`` marks the rows whose name collides, when the caller has looked at the
    whole dataset (``start`` is the first row's number in it); else collisions are
    found among these rows."""
    multi = len(set(sources)) > 1 if multi is None else multi
    names = [
        (f"{s}__" if multi else "") + f.replace("\\", "/").replace("/", "__")
        for s, f in zip(sources, files)
    ]
    if repeated is None:
        counts = Counter(names)
        repeated = [counts[n] > 1 for n in names]
    for i, n in enumerate(names):
        if repeated[i]:
            stem, dot, ext = n.rpartition(".")
            names[i] = f"{stem}-{start + i}.{ext}" if dot else f"{n}-{start + i}"
    return names


def label_lines(records: pa.Table, class_of: dict) -> list[str]:
    """One label-file text per image, built column-wise (no loop per box)."""
    fb = flatten_boxes(records)
    names = list(class_of)
    pos = np.asarray(pc.index_in(fb.category, value_set=pa.array(names, pa.string())))
    cls = np.asarray([class_of[n] for n in names], dtype=np.int64)[pos] if pos.size else pos
    x0, y0, x1, y1 = fb.xyxy.T
    cols = [np.round(v, 6) for v in ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)]
    lines = pc.binary_join_element_wise(
        *(pc.cast(pa.array(c), pa.string()) for c in [cls, *cols]), "\n", " "
    )
    lines = pc.utf8_replace_slice(lines, -2, -1, "").to_pylist()  # "... h \n" -> "... h\n"
    off = fb.offsets
    return ["".join(lines[off[i] : off[i + 1]]) for i in range(records.num_rows)]


def names_part(path: Path, part: Path, rows: int | None) -> dict:
    """Pass 1 on one part: the categories used, the sources, 16-byte digests of the
    flattened image names (without and with the source prefix, since whether there are
    several sources is known only after the last part), and ``part_index``."""
    rec = read_part(path, part, ["image_id", "source", "file", "boxes"], rows, NAME_FIELDS)
    src, files = rec.column("source").to_pylist(), rec.column("file").to_pylist()
    plain = [False] * len(src)
    return {
        "used": set(pc.unique(flatten_boxes(rec).category).to_pylist()),
        "sources": set(src),
        "names": [string_digests(flat_names(src, files, m, repeated=plain)) for m in (0, 1)],
        **part_index(rec),
    }


def write_part(
    path: Path,
    part: Path,
    rows: int | None,
    tmp: Path,
    class_of: dict,
    multi: bool,
    repeated: np.ndarray,
    start: int,
) -> dict:
    """Pass 2 on one part: its label files and image links, written into the staging
    folder ``tmp`` (on dask workers too, so they must see ``tmp`` and the images at the
    same paths); returns the part's counts."""
    ds = load_meta(path)  # each source's images root
    rec = read_part(path, part, None, rows)
    sources, files = rec.column("source").to_pylist(), rec.column("file").to_pylist()
    texts = label_lines(rec, class_of)
    split = ["val" if s == "val" else "train" for s in rec.column("split").to_pylist()]
    flat = flat_names(sources, files, multi, repeated, start)
    missing, how = 0, Counter()
    for i in range(rec.num_rows):
        src = ds.image_path(sources[i], files[i])
        if src is None or not src.is_file():
            missing += 1
            continue
        how[link_or_copy(src, tmp / "images" / split[i] / flat[i])] += 1
        stem = flat[i].rpartition(".")[0] or flat[i]
        (tmp / "labels" / split[i] / f"{stem}.txt").write_text(texts[i])
    return {"rows": rec.num_rows, "missing": missing, "how": how}


def _names_pass(ds, parts: list, scheduler) -> tuple[list[str], bool, np.ndarray, np.ndarray]:
    """Pass 1 over the parts (``names_part``, one task each): the categories, whether
    there are several sources, and which flattened image names collide (on digests, not
    on the names), and where each part starts among the rows; the whole-dataset checks
    run before anything is written."""
    index = list(map_parts(names_part, parts, scheduler))
    check_whole(ds, [i.pop("digests") for i in index], sum(i["boxes"] for i in index))
    used = set().union(*(i["used"] for i in index))
    multi = len(set().union(*(i["sources"] for i in index))) > 1
    digests = [i["names"][multi] for i in index]
    del index
    starts = np.cumsum([0] + [len(x) for x in digests])
    d = np.concatenate(digests) if digests else np.zeros((0, 2), "<u8")
    first = first_rows(d)
    later = first != np.arange(first.size)
    repeated = later.copy()
    repeated[first[later]] = True  # the first copy of a repeated name too
    names, _ = category_table(ds, pa.array(sorted(n for n in used if n is not None), pa.string()))
    return names, multi, repeated, starts


def export_yolo(
    dataset: str | Path, out: str | Path, *, scheduler: str | None = None, overwrite: bool = False
) -> Path:
    """Write an ultralytics dataset to ``out``; returns the path of its ``data.yaml``.

    Part by part, so memory is set by the part size: a first pass finds the categories
    and the name collisions, the second writes each part's labels and links. Each pass
    runs one task per part, here or on dask (``scheduler``, ``map_parts``); the second
    pass's tasks write into the staging folder themselves, so a cluster's workers must
    share this filesystem (they read the dataset from it too)."""
    check_scheduler(scheduler)
    ds = load_meta(dataset)
    out = Path(out).resolve()
    with claim_output(out, kind=KIND, inputs=ds.input_paths(), overwrite=overwrite):
        root = Path(os.path.abspath(ds.path))  # tasks may run in another working folder
        parts = [(root, *p) for p in parts_of(root, ds.manifest)]
        names, multi, repeated, starts = _names_pass(ds, parts, scheduler)
        class_of = {n: i for i, n in enumerate(names)}
        with atomic_output_dir(out, kind=KIND) as tmp:
            for sub in ("images/train", "images/val", "labels/train", "labels/val"):
                (tmp / sub).mkdir(parents=True)
            args = [
                (*p, tmp, class_of, multi, repeated[starts[k] : starts[k + 1]], int(starts[k]))
                for k, p in enumerate(parts)
            ]
            missing, how, seen = 0, Counter(), 0
            total = (ds.manifest.get("counts") or {}).get("images_kept")
            bar = progress(total=total, desc="export yolo", unit="img")
            for done in map_parts(write_part, args, scheduler):
                missing += done["missing"]
                how.update(done["how"])
                seen += done["rows"]
                bar.update(done["rows"])
            bar.close()
            exported = sum(how.values())
            if exported == 0:
                raise UserError(
                    f"export yolo: none of the {seen} images of {ds.path} exists under its "
                    "source's images root (ingest with --images-root DIR)"
                )
            has_val = any((tmp / "images" / "val").iterdir())
            data = {
                "path": str(out),
                "train": "images/train",
                "val": "images/val" if has_val else "images/train",
                "names": dict(enumerate(names)),
            }
            (tmp / DATA_YAML).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        # a summary: said even with --quiet, which hides progress bars only
        note = "" if has_val else "; no val split (run curate), val = train"
        skipped = f", {missing} skipped (image file missing)" if missing else ""
        print(f"export yolo: {exported} images ({dict(how)}){skipped}{note} -> {out / DATA_YAML}")
        return out / DATA_YAML
