"""The held-out learning signal separates what the boxes are worth from the gated layers' rest."""

from __future__ import annotations

import pytest
import torch

from pipeline.stages.denoise_gap import denoise_gap
from tests.train_fixtures import make_dataset
from trainer.model import load_components, save_adapters
from trainer.train import warm_start_gates


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_pixel_model):
    root = tmp_path_factory.mktemp("gap")
    model = tiny_pixel_model
    layouts = make_dataset(root, sizes=((32, 32),) * 4, boxes_per=2)
    unet = load_components(model, gated=True).unet
    save_adapters(unet, root / "closed.safetensors")  # diffusers' zero gates
    warm_start_gates(unet, 1.0)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name.endswith("alpha_dense"):
                p.fill_(1.0)
    save_adapters(unet, root / "open.safetensors")
    return root, model, layouts


def test_closed_gates_show_no_gap(setup, one_torch_thread):
    root, model, layouts = setup
    r = denoise_gap(
        model,
        root / "closed.safetensors",
        layouts,
        root / "closed.json",
        timesteps=(500, 900),
        limit=4,
    )
    for v in r["timesteps"].values():
        assert v["loss_gates_on"] == v["loss_gates_off"] == v["loss_shuffled_layout"]
        assert v["gap"] == 0 and v["layout_gap"] == 0
    assert (root / "closed.json").is_file()


def test_open_gates_read_the_layout(setup, one_torch_thread):
    """Open random adapters change the prediction, and a neighbour's layout changes it again."""
    root, model, layouts = setup
    r = denoise_gap(
        model, root / "open.safetensors", layouts, root / "open.json", timesteps=(500,), limit=4
    )
    v = r["timesteps"]["500"]
    assert v["loss_gates_on"] != v["loss_gates_off"]
    assert v["loss_shuffled_layout"] != v["loss_gates_on"]
    assert r["mean_layout_gap"] == v["layout_gap"]
