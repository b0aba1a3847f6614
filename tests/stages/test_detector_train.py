"""``groundset detector train``: export → YOLO.train → best.pt that the label stage loads.

One epoch on a dozen 64 px images from yolov8n.yaml: the point is that the whole path
runs offline (no font, AMP or weights download), writes its outputs atomically, and
hands ``label`` a detector whose class names are the dataset's categories.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline.core.dataset import read_dataset
from pipeline.core.hashing import sha256_file
from pipeline.stages.label.run import label
from tests.dataset_factory import make_dataset

# ultralytics switches its integrations (the DVC one among them) off under pytest; the
# child process must look like a user's run for the "no dvclive" check to mean anything.
NOT_UNDER_PYTEST = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}


def _shapes_dataset(tmp_path, n=12):
    """Coloured squares on grey, with exact boxes: a tiny world a detector can learn."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    root.mkdir()
    images, boxes = [], []
    for i in range(n):
        a = np.full((64, 64, 3), 90, np.uint8)
        for _ in range(2):
            s = int(rng.integers(12, 24))
            x, y = (int(v) for v in rng.integers(0, 64 - s, 2))
            red = bool(rng.integers(0, 2))
            a[y : y + s, x : x + s] = (220, 30, 30) if red else (30, 30, 220)
            boxes.append(
                {
                    "image": i,
                    "xyxy": [x / 64, y / 64, (x + s) / 64, (y + s) / 64],
                    "category": "red square" if red else "blue square",
                }
            )
        Image.fromarray(a).save(root / f"s{i:02d}.png")
        images.append(
            {
                "id": i,
                "file": f"s{i:02d}.png",
                "width": 64,
                "height": 64,
                "split": "val" if i % 4 == 0 else "train",
            }
        )
    make_dataset(tmp_path / "ds", "shapes", images, boxes, images_root=root)
    return tmp_path / "ds", root


@pytest.mark.slow
def test_detector_train_cli_writes_best_pt_that_label_uses(tmp_path):
    ds, root = _shapes_dataset(tmp_path)
    run = tmp_path / "run"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "--quiet",
            "detector",
            "train",
            "--data",
            str(ds),
            "--out",
            str(run),
            "--weights",
            "yolov8n.yaml",
            "--epochs",
            "1",
            "--imgsz",
            "64",
            "--batch",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
        env=NOT_UNDER_PYTEST,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / "best.pt").is_file() and (run / "results.csv").is_file()
    m = json.loads((run / "manifest.json").read_text())
    assert sorted(m["class_names"]) == ["blue square", "red square"]
    assert m["best"]["sha256"] == sha256_file(run / "best.pt")
    assert not list(tmp_path.glob(".run.tmp-*"))  # staging removed
    assert not (tmp_path / "dvclive").exists()  # ultralytics' DVC callback stayed off

    out = label(root, tmp_path / "labelled", run / "best.pt", conf=0.0, max_det=2, imgsz=64)
    assert out["detector"]["class_names"] == m["class_names"]
    assert out["detector"]["origin"] == m["best"]["origin"]
    cats = set(
        read_dataset(tmp_path / "labelled")
        .records["boxes"]
        .combine_chunks()
        .flatten()
        .field("category")
        .to_pylist()
    )
    assert cats and cats <= {"blue square", "red square"}


def test_detector_train_rejects_bad_inputs(tmp_path):
    from pipeline.core.errors import UserError
    from pipeline.stages.detector_train import train_detector

    ds, _ = _shapes_dataset(tmp_path, n=2)
    with pytest.raises(UserError, match="releases"):
        train_detector(ds, tmp_path / "r", weights=str(tmp_path / "missing.pt"), epochs=1)
    with pytest.raises(UserError):
        train_detector(tmp_path / "not_a_dataset", tmp_path / "r", epochs=1, imgsz=64)
    with pytest.raises(UserError, match="epochs"):
        train_detector(ds, tmp_path / "r", epochs=0)
    assert not (tmp_path / "r").exists()
