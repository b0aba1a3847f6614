"""Ultralytics/Roboflow dataset trees built in tests, the way those tools lay them out.

A Roboflow "YOLOv8" export is a folder with ``train|valid|test/{images,labels}``, two
README ``.txt`` files at the top and a ``data.yaml`` whose split paths start with
``../`` (ultralytics strips that prefix when the path does not exist). Real (tiny)
images are written with PIL, so header sizes go through the same code as real data.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from PIL import Image

NAMES = ["car", "truck", "person"]
# split folder -> number of images; image k of a split has k % 4 label lines (0: an
# empty label file, a background image as Roboflow writes it)
SPLITS = {"train": 12, "valid": 5, "test": 3}
README_ROBOFLOW = (
    "\nvehicles - v2 2024-01-01\n==============================\n\n"
    "This dataset was exported via roboflow.com on January 1, 2024\n\n"
    "Visit https://github.com/roboflow/notebooks\n\n"
    "It includes 20 images.\nCars are annotated in YOLOv8 format.\n"
)
README_DATASET = "# vehicles > 2024-01-01\nhttps://universe.roboflow.com\n\nProvided by a user\n"


def write_image(path: Path, w: int, h: int, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (90, 140, 30)).save(path, fmt)


def label_text(k: int) -> str:
    """``k % 4`` distinct, valid box lines (class k+j mod 3, centred boxes that never clip)."""
    return "".join(
        f"{(k + j) % len(NAMES)} {0.3 + 0.1 * j:.6f} 0.5 0.2 0.3\n" for j in range(k % 4)
    )


def roboflow_tree(root: Path, *, names_as_list: bool = True) -> Path:
    """Write a Roboflow YOLOv8 export under ``root``; returns ``root``."""
    for split, n in SPLITS.items():
        for k in range(n):
            stem = f"{split}_{k:03d}_jpg.rf.{k:08x}"
            write_image(root / split / "images" / f"{stem}.jpg", 32 + k, 24)
            lab = root / split / "labels" / f"{stem}.txt"
            lab.parent.mkdir(parents=True, exist_ok=True)
            lab.write_text(label_text(k))
    (root / "README.roboflow.txt").write_text(README_ROBOFLOW)
    (root / "README.dataset.txt").write_text(README_DATASET)
    names = NAMES if names_as_list else dict(enumerate(NAMES))
    doc = {
        "train": "../train/images",
        "val": "../valid/images",
        "test": "../test/images",
        "nc": len(NAMES),
        "names": names,
        "roboflow": {"workspace": "w", "project": "vehicles", "version": 2},
    }
    (root / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def label_lines(root: Path, split: str | None = None) -> int:
    """Non-blank lines of the label files of one split folder (or all), counted as text."""
    dirs = [root / split / "labels"] if split else [root / s / "labels" for s in SPLITS]
    return sum(
        sum(1 for line in f.read_text().splitlines() if line.strip())
        for d in dirs
        for f in d.glob("*.txt")
    )


def run_cli(monkeypatch, capsys, *args):
    """``groundset --quiet ingest yolo ARGS`` in process: (exit code, stdout, stderr)."""
    import sys

    from pipeline.cli import main

    monkeypatch.setattr(sys, "argv", ["groundset", "--quiet", "ingest", "yolo", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err
