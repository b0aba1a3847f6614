"""Ultralytics YOLO behind the ``Detector`` protocol.

One backend covers every format ultralytics can load from a local path: ``.pt``,
``.onnx``, ``*_openvino_model/`` folders and friends, plus a model ``.yaml`` that
ultralytics ships (random weights: only good for plumbing tests and for training from
scratch). YOLO-World weights take an open vocabulary. Nothing is ever downloaded: a
missing path is a ``UserError`` that says where weights come from.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detectors.base import Detections, DetectorOptions, model_name
from detectors.offline import go_offline
from pipeline.core.errors import UserError
from pipeline.core.hashing import fingerprint, sha256_json

WEIGHTS_HELP = (
    "groundset never downloads weights: get e.g. yolov8n.pt from "
    "https://github.com/ultralytics/assets/releases (or export your own model with "
    "`yolo export`) and pass its local path"
)
ACCEPTED = (
    "give an ultralytics detector: a .pt file, an .onnx or .torchscript file, a "
    "*_openvino_model folder, or a model config such as yolov8n.yaml"
)
# Seed for models built from a .yaml, so two processes build the same random weights and
# a resumed run reproduces the records of an uninterrupted one.
YAML_SEED = 0


def resolve_weights(weights: str | Path) -> tuple[Path | None, str]:
    """Return ``(local path or None, kind)``; kind is ``file``, ``folder`` or ``yaml``.

    A bare ``*.yaml`` name that does not exist locally is looked up among the model
    configs ultralytics ships (``yolov8n.yaml``); anything else must exist on disk.
    """
    p = Path(weights)
    if p.is_dir():
        return p, "folder"
    if p.is_file():
        return p, "yaml" if p.suffix in (".yaml", ".yml") else "file"
    if p.suffix in (".yaml", ".yml") and p.name == str(weights) and _model_yaml(p.name):
        return p, "yaml"
    raise UserError(f"weights {weights} not found; {WEIGHTS_HELP}")


def _model_yaml(name: str) -> dict | None:
    """The parsed config ultralytics would build (yolov8n.yaml is yolov8.yaml at scale n)."""
    go_offline()
    from ultralytics.nn.tasks import yaml_model_load

    try:
        return yaml_model_load(name)
    except (FileNotFoundError, OSError):
        return None


def fingerprint_weights(path: Path, kind: str) -> str:
    """sha256 of the weights; a .yaml model is identified by its parsed config and seed."""
    if kind != "yaml":
        return fingerprint(path)  # a file, or a folder format (OpenVINO), name by name
    return sha256_json({"cfg": _model_yaml(str(path)) or {}, "seed": YAML_SEED})


def is_world(path: Path) -> bool:
    return "world" in path.name.lower()


class UltralyticsDetector:
    """Loads the model once; ``detect`` runs ultralytics' own letterbox, NMS and rescale."""

    def __init__(
        self,
        weights: str | Path,
        options: DetectorOptions,
        *,
        device: str = "cpu",
        threads: int | None = None,
    ):
        path, kind = resolve_weights(weights)
        go_offline()
        self.path = path
        self.kind = kind
        self.options = options
        self.device = device
        self.threads = threads
        self.name = model_name(path)
        self.fingerprint = fingerprint_weights(path, kind)
        self.model = self._load(path, kind)
        self.names = _names_list(self.model.names)
        if options.vocabulary:
            self._set_vocabulary(list(options.vocabulary))
        self.class_ids = self._class_ids(options.classes)
        self._warm_up()

    # -- loading ------------------------------------------------------------------
    def _load(self, path: Path, kind: str):
        import torch
        from ultralytics import YOLO, YOLOWorld

        cls = YOLOWorld if is_world(path) else YOLO
        kwargs = {} if cls is YOLOWorld else {"task": "detect"}
        try:
            if kind == "yaml":
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(YAML_SEED)
                    model = cls(str(path), **kwargs)
            else:
                model = cls(str(path), **kwargs)
            model.names  # noqa: B018 (some formats load lazily: fail here, not mid-run)
            return model
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 (corrupt file, wrong format, no openvino)
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            msg = msg.split(". ")[0][:200]  # ultralytics appends a long list of formats
            raise UserError(f"cannot load detector weights {path}: {msg}; {ACCEPTED}") from None

    def _set_vocabulary(self, vocabulary: list[str]) -> None:
        """YOLO-World embeds the prompts with a CLIP text model that ultralytics downloads."""
        if not is_world(self.path):
            raise UserError(
                f"--vocabulary needs YOLO-World weights (e.g. yolov8s-worldv2.pt); {self.path} "
                "is a closed-vocabulary detector"
            )
        try:
            self.model.set_classes(vocabulary)
        except Exception as e:  # noqa: BLE001 (missing clip package, failed download, ...)
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                "YOLO-World could not embed the vocabulary: it needs ultralytics' CLIP text "
                "model (pip install git+https://github.com/ultralytics/CLIP.git and its "
                f"ViT-B/32 weights in the ultralytics weights dir), which groundset does not "
                f"download ({msg})"
            ) from None
        self.names = list(vocabulary)

    def _class_ids(self, classes: Sequence[str]) -> list[int] | None:
        if not classes:
            return None
        lookup = {n: i for i, n in enumerate(self.names)}
        unknown = [c for c in classes if c not in lookup and not str(c).isdigit()]
        if unknown:
            known = ", ".join(self.names[:10]) + (", ..." if len(self.names) > 10 else "")
            raise UserError(
                f"--classes names unknown to {self.name}: {', '.join(unknown)} "
                f"(the model knows: {known})"
            )
        ids = [lookup[c] if c in lookup else int(c) for c in classes]
        bad = [i for i in ids if i >= len(self.names)]
        if bad:
            raise UserError(f"--classes ids out of range for {self.name}: {bad}")
        return sorted(set(ids))

    def _warm_up(self) -> None:
        """Build the predictor now so a worker pays the setup once, and pin its threads.

        ultralytics resets torch's thread count when it sets up a predictor, so the
        requested count is applied after that.
        """
        blank = [np.zeros((32, 32, 3), dtype=np.uint8)]
        self.detect(blank)
        if self.threads:
            import torch

            torch.set_num_threads(int(self.threads))
            self._limit_openvino_threads(int(self.threads))
            self.detect(blank)  # the recompiled model's first run is slow too

    def _limit_openvino_threads(self, n: int) -> None:
        """Recompile an OpenVINO model with ``n`` inference threads.

        OpenVINO ignores torch's setting and takes every core, so N worker processes
        would each start one thread per core and fight over them; and it pins threads
        to cores, so N workers with one thread each would all land on the same core. ultralytics keeps its
        compile call as a ``functools.partial`` on the backend; when that is not there
        (another format, another ultralytics version) the model is left as it is.
        """
        backend = getattr(getattr(self.model.predictor, "model", None), "backend", None)
        compile_model = getattr(backend, "compile_model", None)
        if not isinstance(compile_model, functools.partial) or self.kind != "folder":
            return
        core = getattr(compile_model.func, "__self__", None)
        xml = next(self.path.glob("*.xml"), None)
        if core is None or xml is None:
            return
        # Pinning off: each process pins its threads starting at core 0, so N pinned
        # workers share one core (measured: 2 processes 0.95x of one; unpinned 1.93x).
        config = {
            **compile_model.keywords.get("config", {}),
            "INFERENCE_NUM_THREADS": n,
            "ENABLE_CPU_PINNING": False,
        }
        backend.compile_model = functools.partial(
            compile_model.func, *compile_model.args, **{**compile_model.keywords, "config": config}
        )
        backend.ov_compiled_model = backend.compile_model(core.read_model(str(xml)))

    # -- inference ----------------------------------------------------------------
    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        if not len(images):
            return []
        # ultralytics treats numpy input as OpenCV BGR; our contract is RGB.
        bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]
        o = self.options
        results = self.model.predict(
            bgr,
            conf=o.conf,
            iou=o.iou,
            max_det=o.max_det,
            imgsz=o.imgsz,
            classes=self.class_ids,
            device=self.device,
            verbose=False,
        )
        names = np.asarray(self.names, dtype=object)
        out = []
        for r in results:
            b = r.boxes
            cls = b.cls.cpu().numpy().astype(np.int64)
            out.append(Detections(b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), names[cls].tolist()))
        return out


def _names_list(names) -> list[str]:
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    return [str(n) for n in names]
