"""The one contract between groundset and any object detector.

The label stage only needs "boxes, scores and class names per image", so a backend is
anything with a ``detect`` method over a batch of RGB arrays. Keeping the contract this
small lets a new backend (GLIP, Grounding DINO, an ONNX runtime) plug in without the
stage driver knowing which library sits behind it; this package knows nothing of
datasets or records.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class Detections:
    """Detections of one image: pixel xyxy in the displayed orientation of the input array."""

    xyxy: np.ndarray  # (n, 4) float32, pixels
    scores: np.ndarray  # (n,) float32
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.class_names = [str(c) for c in self.class_names]
        if not (len(self.xyxy) == len(self.scores) == len(self.class_names)):
            raise ValueError("xyxy, scores and class_names must have equal length")

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class DetectorOptions:
    """Thresholds a detector is run with; recorded in the manifest so a run is reproducible."""

    conf: float
    iou: float
    max_det: int
    imgsz: int
    classes: tuple[str, ...] = ()  # keep only these class names (empty: all)
    vocabulary: tuple[str, ...] = ()  # open-vocabulary prompts (YOLO-World)

    def as_dict(self) -> dict:
        return {
            "conf": self.conf,
            "iou": self.iou,
            "max_det": self.max_det,
            "imgsz": self.imgsz,
            "classes": list(self.classes),
            "vocabulary": list(self.vocabulary),
        }


@runtime_checkable
class Detector(Protocol):
    """What the label stage calls. ``name`` and ``fingerprint`` make up a box's origin."""

    name: str
    fingerprint: str  # sha256 of the weights

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """One ``Detections`` per HxWx3 uint8 RGB array, in input order."""
        ...


def model_name(path: str | Path) -> str:
    """A short human name for the origin string: ``yolov8n`` for ``yolov8n.pt``."""
    name = Path(os.fspath(path)).name
    for suffix in ("_openvino_model", "_saved_model", "_ncnn_model"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


def origin(name: str, fingerprint: str) -> str:
    return f"{name}@{fingerprint[:12]}"
