"""``detector train``: fit an ultralytics YOLO to a labelled groundset dataset, offline.

Pseudo-labels are only as good as the detector, and a COCO detector knows nothing of a
user's domain (or of the demo world's shapes). This stage exports a dataset directory to
ultralytics' YOLO layout and runs ``YOLO.train`` on it, writing ``best.pt`` where the
label stage can pick it up.

ultralytics reaches for the network during training: a font for plots (a HEAD request
per dataset check), AMP-check weights on GPUs, analytics events, and integration
callbacks (its DVC callback would open a dvclive experiment inside our own DVC stage).
All of these are turned off here, so training behaves the same with or without internet.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from detectors.base import model_name, origin
from detectors.offline import go_offline
from detectors.ultralytics_backend import YAML_SEED, fingerprint_weights, resolve_weights
from pipeline.core import defaults as D
from pipeline.core.atomic import atomic_output_dir, atomic_write_text, scratch_dir
from pipeline.core.dataset import dataset_input_paths, input_entry
from pipeline.core.device import resolve_device
from pipeline.core.errors import UserError
from pipeline.core.hashing import sha256_file
from pipeline.core.outputs import claim_output
from pipeline.core.progress import quiet

KIND = "detector-train"
OUTPUT_FILES = ("best.pt", "last.pt")
LOG_FILES = ("results.csv", "args.yaml")


@contextlib.contextmanager
def _no_integrations():
    """Keep ultralytics from adding its integration and analytics callbacks.

    The trainer adds them and fires ``on_pretrain_routine_start`` inside its constructor
    (the DVC one opens a dvclive experiment right there), so removing them afterwards is
    too late; the module function that adds them is swapped out for the duration.
    """
    from ultralytics.utils import callbacks

    original = callbacks.add_integration_callbacks
    callbacks.add_integration_callbacks = lambda instance: None
    try:
        yield
    finally:
        callbacks.add_integration_callbacks = original


@contextlib.contextmanager
def _local_fonts():
    """Make ultralytics' font check answer from local fonts instead of downloading Arial.

    ``check_font`` is imported by name into several ultralytics modules; each binding is
    swapped for the duration of training and restored afterwards.
    """
    import sys

    from matplotlib import font_manager

    local = font_manager.findfont("DejaVu Sans")
    patched = []
    for mod in list(sys.modules.values()):
        name = getattr(mod, "__name__", "") or ""
        if name.startswith("ultralytics") and hasattr(mod, "check_font"):
            patched.append((mod, mod.check_font))
            mod.check_font = lambda font="Arial.ttf", _local=local: Path(_local)
    try:
        yield
    finally:
        for mod, fn in patched:
            mod.check_font = fn


def train_detector(
    data: str | Path,
    out: str | Path,
    *,
    weights: str = D.DETECTOR_WEIGHTS,
    epochs: int = D.DETECTOR_EPOCHS,
    imgsz: int = D.IMGSZ,
    batch: int = D.DETECTOR_BATCH,
    device: str = D.DEVICE,
    seed: int = D.SEED,
    workers: int = D.DETECTOR_WORKERS,
    overwrite: bool = False,
) -> dict:
    """Train on dataset ``data``; write ``out/best.pt``, ``last.pt``, logs and a manifest."""
    from pipeline.stages.export.yolo import export_yolo

    out = Path(out)
    if epochs < 1 or imgsz < 32 or batch < 1:
        raise UserError("--epochs and --batch must be >= 1 and --imgsz >= 32")
    device = resolve_device(device)
    go_offline(verbose=not quiet())  # ultralytics' epoch table is the progress display
    with claim_output(
        out, kind=KIND, inputs=[*dataset_input_paths(data), weights], overwrite=overwrite
    ):
        weights_path, kind = resolve_weights(weights)
        fingerprint = fingerprint_weights(weights_path, kind)
        import torch
        from ultralytics import YOLO

        with scratch_dir(out) as work, atomic_output_dir(out, kind=KIND) as staged:
            data_yaml = export_yolo(data, work / "yolo")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(YAML_SEED)
                model = YOLO(str(weights_path), task="detect")
            with _local_fonts(), _no_integrations():
                model.train(
                    data=str(data_yaml),
                    epochs=epochs,
                    imgsz=imgsz,
                    batch=batch,
                    device=device,
                    workers=workers,
                    seed=seed,
                    deterministic=True,
                    amp=False,
                    plots=False,
                    # absolute: ultralytics puts a relative project under its runs_dir/detect
                    project=str((work / "runs").resolve()),
                    name="train",
                    exist_ok=True,
                )
            run = Path(model.trainer.save_dir)
            for name in OUTPUT_FILES:
                if (run / "weights" / name).is_file():
                    shutil.move(str(run / "weights" / name), staged / name)
            if not (staged / "best.pt").is_file():
                raise UserError(f"training finished without a best.pt in {run}")
            for name in LOG_FILES:
                if (run / name).is_file():
                    shutil.move(str(run / name), staged / name)
            best_sha = sha256_file(staged / "best.pt")
            manifest = {
                "stage": "detector-train",
                "inputs": [input_entry(data), {"path": str(weights), "sha256": fingerprint}],
                "params": {
                    "weights": str(weights),
                    "epochs": epochs,
                    "imgsz": imgsz,
                    "batch": batch,
                    "device": device,
                    "seed": seed,
                },
                "class_names": [str(n) for n in _names(model)],
                "metrics": _metrics(model),
                "best": {
                    "sha256": best_sha,
                    "origin": origin(model_name(staged / "best.pt"), best_sha),
                },
            }
            atomic_write_text(staged / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        return manifest


def _names(model) -> list:
    names = model.names
    return [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)


def _metrics(model) -> dict:
    m = getattr(model.trainer, "metrics", None) or {}
    return {str(k): float(v) for k, v in m.items() if isinstance(v, (int, float))}
