"""The schema of ``params.yaml``: one typed description that every profile must satisfy.

``dvc.yaml`` interpolates these values into ``groundset`` command lines, so a misspelt
key or a string where a number belongs would only surface minutes into a run, as an
obscure DVC or CLI error. Validating a profile up front (the demo ``params.yaml`` and
the real-data ``params.coco.yaml`` alike) turns that into one clear line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec
import yaml

from pipeline.core import defaults as D
from pipeline.core.checks import check_timestep_bias
from pipeline.core.errors import UserError


class _S(msgspec.Struct, forbid_unknown_fields=True):
    pass


class Demo(_S):
    n_natural: int
    n_unlabelled: int
    n_grid: int
    n_heldout: int
    size: int
    seed: int


class CocoSlot(_S):
    instances: str
    captions: str
    images: str
    source: str


class Ingest(_S):
    natural: CocoSlot
    grid: CocoSlot
    heldout: CocoSlot


class Detector(_S):
    weights: str
    epochs: int
    imgsz: int
    batch: int
    seed: int


class Label(_S):
    images: str
    captions: str
    source: str
    conf: float
    iou: float
    imgsz: int


class Curate(_S):
    min_box_area: float
    max_boxes: int
    val_fraction: float
    seed: int


class Audit(_S):
    max_grid_share: float
    threshold: float
    remediate: Literal[D.REMEDIATIONS]


class Model(_S):
    init_seed: int
    prediction_type: Literal[D.PREDICTION_TYPES]
    path: str


class Steps(_S):
    steps: int
    lr: float
    warmup: int
    batch_size: int
    monitor_every: int
    seed: int


class Train(Steps):
    """The adapter run: GLIGEN's recipe is attn_gate_init 0 and timestep_bias none."""

    attn_gate_init: float
    timestep_bias: Literal[D.TIMESTEP_BIASES]
    timestep_bias_multiplier: float
    timestep_bias_portion: float


class Evaluate(_S):
    betas: str
    steps: int
    guidance_scale: float
    limit: int
    seed: int


class Params(_S):
    profile: Literal["demo", "real"]
    cpu_threads: int
    demo: Demo
    ingest: Ingest
    detector: Detector
    label: Label
    curate: Curate
    audit: Audit
    model: Model
    base: Steps
    train: Train
    evaluate: Evaluate


def _check_ranges(p: Params) -> None:
    problems = []
    if min(p.demo.n_natural, p.demo.n_unlabelled, p.demo.n_grid, p.demo.n_heldout) < 0:
        problems.append("demo sizes must be >= 0")
    for name, v in (
        ("label.conf", p.label.conf),
        ("label.iou", p.label.iou),
        ("curate.val_fraction", p.curate.val_fraction),
        ("curate.min_box_area", p.curate.min_box_area),
        ("audit.max_grid_share", p.audit.max_grid_share),
        ("audit.threshold", p.audit.threshold),
    ):
        if not 0.0 <= v <= 1.0:
            problems.append(f"{name}={v} is not in [0, 1]")
    try:
        betas = [float(b) for b in p.evaluate.betas.split(",")]
    except ValueError:
        betas = [-1.0]
    if not betas or any(not 0.0 <= b <= 1.0 for b in betas):
        problems.append(
            f"evaluate.betas={p.evaluate.betas!r} must be comma-separated values in [0, 1]"
        )
    for name, s in (("base", p.base), ("train", p.train)):
        if s.steps < 1 or s.lr <= 0 or s.batch_size < 1 or s.warmup < 0 or s.monitor_every < 1:
            problems.append(
                f"{name}: steps, batch_size, monitor_every >= 1, warmup >= 0 and lr > 0 are required"
            )
    try:
        check_timestep_bias(
            p.train.timestep_bias, p.train.timestep_bias_multiplier, p.train.timestep_bias_portion
        )
    except UserError as e:
        problems.append(f"train: {e}")
    if p.cpu_threads < 1:
        problems.append("cpu_threads must be >= 1")
    if p.profile == "demo" and p.model.path != "runs/model/base/model":
        problems.append(
            "the demo profile trains its own base model (model.path: runs/model/base/model)"
        )
    if problems:
        raise UserError("invalid params: " + "; ".join(problems))


def validate(data: dict) -> Params:
    """Check a loaded params mapping against the schema; raise UserError on the first misfit."""
    try:
        params = msgspec.convert(data, Params)
    except msgspec.ValidationError as e:
        raise UserError(f"invalid params: {e}") from None
    _check_ranges(params)
    return params


def load(path: str | Path) -> Params:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read params file {p}: {e}") from None
    except RecursionError:
        raise UserError(f"cannot read params file {p}: nested too deeply") from None
    return validate(data)
