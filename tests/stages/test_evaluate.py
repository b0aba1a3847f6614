"""The evaluation sweep end to end on the tiny model and a tiny random detector (CPU, offline).

A random detector cannot find objects, so these tests check the plumbing and the
accounting (runs, files, unscorable counts, resumability), not the quality numbers; the
quality numbers are checked on real images in ``test_evaluate_real.py``.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from pipeline.core.dataset import write_dataset
from pipeline.core.records import assemble

N_LAYOUTS = 4
CATS = ["person", "dog", "unicorn"]  # "unicorn" is no COCO class: unscorable


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model):
    """Tiny diffusers model, trained-looking adapters, held-out layouts, random COCO detector."""
    import torch

    from detectors.offline import go_offline
    from trainer.model import load_components, save_adapters

    root = tmp_path_factory.mktemp("eval")
    model = tiny_model
    comps = load_components(model, gated=True)
    with torch.no_grad():  # open the gates so adapters change the picture, as trained ones do
        for name, p in comps.unet.named_parameters():
            if name.endswith(("alpha_attn", "alpha_dense")):
                p.fill_(1.0)
    adapters = save_adapters(comps.unet, root / "adapters.safetensors")

    rng = np.random.default_rng(0)
    k = 3 * N_LAYOUTS
    x0, y0 = rng.uniform(0, 0.5, k), rng.uniform(0, 0.5, k)
    cat = np.array(CATS * N_LAYOUTS, dtype=object)
    records = assemble(
        {
            "image_id": [f"held:{i}" for i in range(N_LAYOUTS + 2)],
            "source": ["held"] * (N_LAYOUTS + 2),
            "file": [f"{i}.png" for i in range(N_LAYOUTS + 2)],
            "width": [64] * (N_LAYOUTS + 2),
            "height": [64] * (N_LAYOUTS + 2),
            "captions": [["a dog and a person"]] * (N_LAYOUTS + 2),
            "split": ["val"] * N_LAYOUTS + ["train"] * 2,  # train rows must not be drawn
        },
        {
            "image_index": np.repeat(np.arange(N_LAYOUTS), 3),
            "phrase": cat,
            "category": cat,
            "x0": x0,
            "y0": y0,
            "x1": x0 + 0.4,
            "y1": y0 + 0.4,
            "score": np.ones(k),
            "origin": ["test"] * k,
        },
    )
    layouts = root / "layouts"
    write_dataset(
        layouts,
        records,
        None,
        stage="test",
        inputs=[],
        params={},
        images_in=N_LAYOUTS + 2,
        boxes_in=k,
    )

    go_offline()
    from ultralytics import YOLO
    from ultralytics.utils import ROOT

    names = yaml.safe_load((ROOT / "cfg" / "datasets" / "coco.yaml").read_text())["names"]
    torch.manual_seed(0)
    det = YOLO("yolov8n.yaml")  # built from the shipped config: no download
    det.model.names = dict(names)
    with torch.no_grad():  # lift class logits so the random head returns boxes to score
        for seq in det.model.model[-1].cv3:
            seq[-1].bias.fill_(2.0)
    weights = root / "det.pt"
    det.save(weights)
    return {
        "root": root,
        "model": model,
        "adapters": adapters,
        "layouts": layouts,
        "weights": weights,
    }


def _detector(weights):
    from detectors.base import DetectorOptions
    from detectors.ultralytics_backend import UltralyticsDetector

    return UltralyticsDetector(weights, DetectorOptions(conf=0.001, iou=0.7, max_det=50, imgsz=64))


def test_sweep_writes_metrics_plots_and_report(world):
    from pipeline.stages.evaluate import UNTRAINED, evaluate

    out = world["root"] / "out"
    metrics = evaluate(
        world["layouts"],
        out,
        _detector(world["weights"]),
        model=world["model"],
        adapters=world["adapters"],
        betas=[0.0, 1.0],
        steps=2,
        baseline=True,
        batch_size=4,
        report_samples=2,
    )
    assert set(metrics["runs"]) == {"beta=0", "beta=1", UNTRAINED}
    assert set(metrics["sweep"]) == {"0", "1"}
    for run in metrics["runs"].values():
        assert run["n_images"] == N_LAYOUTS  # only the val split is drawn
        assert run["n_unscorable"] == N_LAYOUTS and run["unscorable_by_category"] == {
            "unicorn": N_LAYOUTS
        }
        assert run["n_scorable"] == 2 * N_LAYOUTS
        assert run["n_detections"] > 0
        for key in ("ap", "ap50", "ap75", "tiling_score"):
            assert 0.0 <= run[key] <= 1.0
    assert metrics["unscorable_by_category"] == {"unicorn": 3 * N_LAYOUTS}
    assert "skipped" in metrics["fid"]["status"]

    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["runs"].keys() == metrics["runs"].keys()
    rows = (out / "plots" / "beta_sweep.csv").read_text().splitlines()
    assert rows[0].startswith("beta,") and "ap50" in rows[0] and "grid_score" in rows[0]
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1"]
    assert (out / "plots" / "beta_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 * 2 + 1  # 2 samples per run + the plot
    assert 'src="http' not in html  # self-contained
    # beta 0 keeps grounding off for every step: it must equal the closed-gate baseline.
    a = (out / "samples" / "beta-0" / "images" / "000000.png").read_bytes()
    b = (out / "samples" / "untrained" / "images" / "000000.png").read_bytes()
    c = (out / "samples" / "beta-1" / "images" / "000000.png").read_bytes()
    assert a == b and a != c


def test_cli_bad_input_is_one_line(world, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "evaluate",
        "--layouts",
        str(world["layouts"]),
        "--weights",
        str(tmp_path / "missing.pt"),
        "--out",
        str(tmp_path / "o"),
        "--real",
    ]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip().startswith("groundset: error:") and len(r.stderr.strip().splitlines()) == 1
    )
    r = subprocess.run(
        cmd[:-1] + ["--model", str(world["model"]), "--adapters", "none", "--betas", "0,x"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "--betas" in r.stderr


def test_cli_zero_gate_sweep(world, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    out = tmp_path / "o"
    args = [
        "--quiet",
        "evaluate",
        "--layouts",
        str(world["layouts"]),
        "--weights",
        str(world["weights"]),
        "--out",
        str(out),
        "--model",
        str(world["model"]),
        "--adapters",
        "none",
        "--betas",
        "0.5",
        "--steps",
        "1",
        "--limit",
        "2",
        "--imgsz",
        "64",
        "--samples",
        "1",
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["params"]["adapters"] is None and metrics["runs"]["beta=0.5"]["n_images"] == 2
    assert "beta=0.5: AP" in r.output
