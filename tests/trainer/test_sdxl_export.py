"""export-gligen on SDXL: a folder groundset samples from and diffusers opens with the
few lines its README documents (diffusers has no SDXL GLIGEN pipeline class)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BOXES = [[0.1, 0.1, 0.5, 0.9], [0.5, 0.2, 0.9, 0.9]]  # the README example's
PHRASES = ["a dog", "a cat"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_sdxl_model):
    from trainer.gligen_folder import write_gligen_folder
    from trainer.model import load_components, save_adapters

    root = tmp_path_factory.mktemp("sdxl_export")
    comps = load_components(tiny_sdxl_model, gated=True, seed=1)
    with torch.no_grad():  # open the gates so the adapters change the picture, as trained ones do
        for name, p in comps.unet.named_parameters():
            if name.endswith(("alpha_attn", "alpha_dense")):
                p.fill_(1.0)
    adapters = save_adapters(comps.unet, root / "adapters.safetensors")
    out = write_gligen_folder(tiny_sdxl_model, adapters, root / "gligen")
    return {"root": root, "out": out, "model": tiny_sdxl_model}


def _ours(model, steps, beta):
    from trainer.generate import generate, grounding_tensors
    from trainer.model import load_components

    c = load_components(model)
    g = grounding_tensors(c, np.zeros(2, int), np.arange(2), np.array(BOXES), PHRASES, 1)
    return generate(c, ["a dog and a cat"], g, [0], steps=steps, beta=beta)[0][0]


def test_readme_code_draws_what_groundset_draws(exported):
    from trainer.arch import SDXL
    from trainer.model import is_gated, load_components

    out = exported["out"]
    comps = load_components(out)  # groundset reads the folder as a GLIGEN model
    assert comps.arch == SDXL and is_gated(comps.unet)
    readme = (out / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.DOTALL).group(1)
    assert str(out) in code
    steps = 6
    code = code.replace("steps, beta, n = 50, 0.3", f"steps, beta, n = {steps}, 0.5")
    namespace = {}
    exec(code, namespace)  # noqa: S102 - the documented diffusers code, run as a user runs it
    theirs = np.asarray(namespace["image"])
    ours = _ours(out, steps, 0.5)
    # same float32 operations up to reduction order; the uint8 rounding can flip by one level
    assert np.abs(theirs.astype(int) - ours).max() <= 1
    # the adapters are in effect in that picture: closed gates (the base model) draw another
    base = _ours(exported["model"], steps, 0.5)
    assert np.abs(theirs.astype(int) - base).mean() > 1.0
