"""The SDXL path through the CLI: init-model --arch, sample with its size/crop/refiner
options, evaluate and export-gligen on the tiny SDXL folders (CPU, offline)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core.errors import UserError
from tests.stages.test_evaluate import world as eval_world  # noqa: F401 - the detector fixture
from tests.stages.test_sample import layouts_dataset
from trainer.arch import SD1, SDXL, SDXL_REFINER, arch_of_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cli(*args):
    return CliRunner().invoke(app, ["--quiet", *map(str, args)])


def _refused(*args) -> None:
    """Bad input is a UserError, which ``groundset`` prints as one line with exit code 2."""
    r = _cli(*args)
    assert isinstance(r.exception, UserError), r.output
    assert r.exception.exit_code == 2 and "\n" not in str(r.exception)


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory, tiny_sdxl_model):
    """Open-gated (so visible) SDXL adapters and a small layouts dataset."""
    from trainer.model import load_components, save_adapters

    root = tmp_path_factory.mktemp("sdxl_stages")
    comps = load_components(tiny_sdxl_model, gated=True, seed=1)
    with torch.no_grad():
        for name, p in comps.unet.named_parameters():
            if name.endswith(("alpha_attn", "alpha_dense")):
                p.fill_(1.0)
    adapters = save_adapters(comps.unet, root / "adapters.safetensors")
    layouts_dataset(root / "layouts", n_images=2, crowded=3)
    return {"root": root, "model": tiny_sdxl_model, "adapters": adapters}


def test_init_model_arch(tmp_path):
    for arch, want in (("sdxl", SDXL), ("sdxl-refiner", SDXL_REFINER), ("sd1", SD1)):
        r = _cli("init-model", "--tiny", "--arch", arch, "--out", tmp_path / arch)
        assert r.exit_code == 0, r.output
        assert arch_of_folder(tmp_path / arch) == want
    for bad in (["--arch", "sd3"], ["--arch", "sdxl", "--pixel"]):
        _refused("init-model", "--tiny", *bad, "--out", tmp_path / "bad")


def test_sample_sdxl_size_crop_and_refiner(sdxl, tiny_sdxl_refiner, tiny_model, tmp_path):
    common = ["--layouts", sdxl["root"] / "layouts", "--steps", "2", "--adapters", sdxl["adapters"]]
    size = ["--target-size", "64", "128", "--original-size", "512", "256", "--crop", "0", "0"]
    r = _cli("sample", "--model", sdxl["model"], "--out", tmp_path / "a", *common, *size)
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["generation"]["image_size"] == [64, 128]
    assert manifest["params"]["original_size"] == [512, 256]
    first = np.asarray(Image.open(tmp_path / "a" / "images" / "000000.png"))
    assert first.shape == (64, 128, 3)  # height 64, width 128
    r = _cli(
        "sample", "--model", sdxl["model"], "--out", tmp_path / "b", *common, *size,
        "--refiner", tiny_sdxl_refiner, "--refiner-start", "0.5",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    refined = np.asarray(Image.open(tmp_path / "b" / "images" / "000000.png"))
    assert np.abs(refined.astype(int) - first).mean() > 0.5  # the refiner drew the last step
    # size and crop conditions and a refiner mean nothing to SD 1.x; a base is no refiner
    for model, extra in (
        (tiny_model, ["--crop", "8", "8"]),
        (sdxl["model"], ["--refiner", sdxl["model"]]),
        (sdxl["model"], ["--target-size", "60", "128"]),
    ):
        _refused("sample", "--model", model, "--out", tmp_path / "bad", *common, *extra)


def test_evaluate_sdxl_adapters_with_refiner(sdxl, eval_world, tiny_sdxl_refiner, tmp_path):  # noqa: F811
    out = tmp_path / "eval"
    r = _cli(
        "evaluate", "--layouts", eval_world["layouts"], "--weights", eval_world["weights"],
        "--out", out, "--model", sdxl["model"], "--adapters", sdxl["adapters"],
        "--betas", "0,1", "--steps", "2", "--limit", "2", "--imgsz", "64", "--samples", "1",
        "--refiner", tiny_sdxl_refiner,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["runs"]["beta=1"]["n_images"] == 2 and metrics["params"]["refiner"]
    sizes = {Image.open(p).size for p in (out / "samples" / "beta-1" / "images").glob("*.png")}
    assert sizes == {(128, 128)}  # the tiny SDXL's own square


def test_export_gligen_sdxl_cli(sdxl, tmp_path):
    from trainer.model import is_gated, load_components

    r = _cli(
        "export-gligen", "--model", sdxl["model"], "--adapters", sdxl["adapters"],
        "--out", tmp_path / "x",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    index = json.loads((tmp_path / "x" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    assert "cross_attention_kwargs" in (tmp_path / "x" / "README.md").read_text()
    comps = load_components(tmp_path / "x")
    assert comps.arch == SDXL and is_gated(comps.unet)
    r = _cli(
        "sample", "--model", tmp_path / "x", "--layouts", sdxl["root"] / "layouts",
        "--out", tmp_path / "s", "--steps", "1",
    )  # fmt: skip
    assert r.exit_code == 0, r.output


def test_denoise_gap_on_sdxl(sdxl, tmp_path):
    """The DVC pipeline's held-out signal runs on SDXL (pooled text and time ids included)."""
    from pipeline.stages.denoise_gap import denoise_gap
    from tests.train_fixtures import make_dataset

    layouts = make_dataset(tmp_path, sizes=((128, 96), (96, 128)))
    r = denoise_gap(
        sdxl["model"], sdxl["adapters"], layouts, tmp_path / "gap.json", timesteps=(500,), limit=2
    )
    v = r["timesteps"]["500"]
    assert np.isfinite(v["loss_gates_on"]) and v["loss_gates_on"] != v["loss_gates_off"]
