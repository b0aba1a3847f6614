"""Model assembly: tiny folder, gating, freezing, adapter files, loading errors.

Everything runs on the session's tiny random diffusers model (``tiny_model`` in conftest,
written by ``write_tiny``): real diffusers classes, no downloads, a few seconds on a CPU.
"""

import shutil
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline import cli
from pipeline.core.errors import UserError
from trainer.model import (
    adapter_config_path,
    adapter_names,
    adapter_state_dict,
    encode_phrases,
    encode_prompts,
    freeze_for_adapters,
    is_gated,
    load_adapters,
    load_components,
    make_gated,
    save_adapters,
)
from trainer.tiny import write_tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny(tiny_model):
    return tiny_model


def unet_inputs(unet, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    c, s, d = unet.config.in_channels, unet.config.sample_size, unet.config.cross_attention_dim
    x = torch.randn(batch, c, s, s, generator=g)
    t = torch.tensor([10, 700][:batch])
    text = torch.randn(batch, 77, d, generator=g)
    boxes = torch.rand(batch, 30, 4, generator=g).sort(-1).values[..., [0, 2, 1, 3]]
    gligen = {
        "boxes": boxes,
        "positive_embeddings": torch.randn(batch, 30, d, generator=g),
        "masks": (torch.arange(30) < 5).float().expand(batch, 30).clone(),
    }
    return x, t, text, gligen


@torch.no_grad()
def run(unet, x, t, text, gligen=None):
    kwargs = {"gligen": gligen} if gligen is not None else None
    return unet(x, t, encoder_hidden_states=text, cross_attention_kwargs=kwargs).sample


def open_gates(unet, seed=1):
    """Give every adapter weight (gates included) a random non-zero value."""
    g = torch.Generator().manual_seed(seed)
    names = adapter_names(unet)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name in names:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_tiny_folder_is_a_complete_diffusers_model(tiny, tmp_path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny, safety_checker=None)
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    comps = load_components(tiny, gated=False)
    assert not is_gated(comps.unet)
    assert comps.scheduler.config.prediction_type == "epsilon"
    # SD's VAE layout: 4 levels, side / 8, so the 8x8-latent UNet is a 64 px model
    assert comps.vae_scale_factor == 8 and comps.resolution == 64
    ids = comps.tokenizer(["a dog on the left"]).input_ids[0]
    assert ids[0] == comps.tokenizer.bos_token_id and ids[-1] == comps.tokenizer.eos_token_id
    assert len(ids) == 7  # whole-word merges: bos + 5 words + eos
    assert encode_prompts(comps, ["a dog", "two cats"]).shape == (2, 77, 32)
    many, one = (
        encode_phrases(comps, ["dog", "a red car on a big table"]),
        encode_phrases(comps, ["dog"]),
    )
    assert many.shape == (2, 32)
    # float32 CLIP: padding changes the batch's matmul shapes, so only reduction order (~1e-7)
    torch.testing.assert_close(many[0], one[0], atol=1e-5, rtol=1e-5)  # padding-independent
    again = write_tiny(tmp_path / "again", seed=0)  # its own copy, on purpose
    a, b = (
        load_file(tiny / "unet/diffusion_pytorch_model.safetensors"),
        load_file(again / "unet/diffusion_pytorch_model.safetensors"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same weights


def test_gated_unet_keeps_base_weights_and_output(tiny):
    base = load_components(tiny, gated=False).unet
    gated = make_gated(base)
    assert is_gated(gated) and gated is not base
    base_sd, gated_sd = base.state_dict(), gated.state_dict()
    assert set(gated_sd) - set(base_sd) == adapter_names(gated)
    assert all(torch.equal(base_sd[k], gated_sd[k]) for k in base_sd)
    x, t, text, gligen = unet_inputs(base)
    ref = run(base, x, t, text)
    # float32: closed gates add tanh(0) * x = 0 exactly, but the gated blocks' extra ops may
    # reorder reductions (~1e-7); open gates move it by > 1e-3 (checked below)
    torch.testing.assert_close(run(gated, x, t, text, gligen), ref, atol=1e-6, rtol=0)
    open_gates(gated)  # the comparison above is only meaningful if open gates change it
    assert (run(gated, x, t, text, gligen) - ref).abs().max() > 1e-3
    assert make_gated(gated) is gated


def test_trainable_set_is_exactly_fuser_and_position_net(tiny):
    unet = load_components(tiny).unet
    params = freeze_for_adapters(unet)
    trainable = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert trainable == adapter_names(unet)
    assert all(".fuser." in n or n.startswith("position_net.") for n in trainable)
    assert any(n.startswith("position_net.") for n in trainable)
    assert len(params) == len(trainable) < len(list(unet.parameters()))
    x, t, text, gligen = unet_inputs(unet)
    unet(
        x, t, encoder_hidden_states=text, cross_attention_kwargs={"gligen": gligen}
    ).sample.square().mean().backward()
    assert all(p.grad is None for n, p in unet.named_parameters() if n not in trainable)
    gates = [
        p.grad for n, p in unet.named_parameters() if n.endswith(("alpha_attn", "alpha_dense"))
    ]
    assert gates and all(g is not None and g.abs().sum() > 0 for g in gates)
    with pytest.raises(UserError):
        freeze_for_adapters(load_components(tiny, gated=False).unet)


def test_adapter_round_trip_into_fresh_unet(tiny, tmp_path):
    unet = load_components(tiny, seed=0).unet
    open_gates(unet)
    path = save_adapters(unet, tmp_path / "adapters.safetensors", {"steps": 12})
    stored = load_file(path)
    assert set(stored) == adapter_names(unet)
    fresh = load_components(tiny, seed=5).unet  # other random adapter init
    x, t, text, gligen = unet_inputs(unet)
    assert not torch.equal(run(fresh, x, t, text, gligen), run(unet, x, t, text, gligen))
    config = load_adapters(fresh, path)
    assert config["steps"] == 12 and config["format"] == "groundset-gligen-adapters"
    assert adapter_config_path(path).is_file()
    assert torch.equal(run(fresh, x, t, text, gligen), run(unet, x, t, text, gligen))
    a, b = adapter_state_dict(unet), adapter_state_dict(fresh)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_adapters_for_another_model_are_refused(tiny, tmp_path):
    unet = load_components(tiny).unet
    state = adapter_state_dict(unet)
    save_file(dict(list(state.items())[1:]), tmp_path / "short.safetensors")
    with pytest.raises(UserError, match="does not fit"):
        load_adapters(unet, tmp_path / "short.safetensors")
    bad = dict(state)
    key = next(k for k in state if k.startswith("position_net.") and state[k].ndim == 2)
    bad[key] = torch.zeros(3, 3)
    save_file(bad, tmp_path / "shape.safetensors")
    with pytest.raises(UserError, match="shape"):
        load_adapters(unet, tmp_path / "shape.safetensors")
    with pytest.raises(UserError, match="does not exist"):
        load_adapters(unet, tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(UserError):
        load_adapters(unet, tmp_path / "junk.safetensors")


def test_gligen_checkpoint_folder_loads_as_is(tiny, tmp_path):
    unet = load_components(tiny).unet
    open_gates(unet)
    folder = tmp_path / "gligen"
    shutil.copytree(tiny, folder)
    shutil.rmtree(folder / "unet")
    unet.save_pretrained(folder / "unet")
    loaded = load_components(folder).unet
    assert is_gated(loaded)
    x, t, text, gligen = unet_inputs(unet)
    assert torch.equal(run(loaded, x, t, text, gligen), run(unet, x, t, text, gligen))


def test_pixel_space_tiny_model(tiny_pixel_model):
    from trainer.model import from_latents, to_latents

    comps = load_components(tiny_pixel_model)
    assert comps.vae is None and comps.unet.config.in_channels == 3 and comps.resolution == 32
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(from_latents(comps, to_latents(comps, x)), x)
    from trainer.generate import generate, grounding_tensors

    gl = grounding_tensors(comps, [0], [0], [[0.1, 0.1, 0.6, 0.6]], ["dog"], 1)
    images, _ = generate(comps, ["a dog"], gl, [0], steps=2, scheduler="dpm")
    assert images.shape == (1, 32, 32, 3) and images.dtype == np.uint8


def cli_error(monkeypatch, capsys, *args, env=None):
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(sys, "argv", ["groundset", *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    return e.value.code, err


def test_cli_model_errors_are_one_line_exit_2(tiny, tmp_path, monkeypatch, capsys):
    lay = tmp_path / "nolayouts"
    code, err = cli_error(
        monkeypatch,
        capsys,
        "sample",
        "--model",
        str(tmp_path / "none"),
        "--layouts",
        str(lay),
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2 and len(err) == 1 and "does not exist" in err[0]
    code, err = cli_error(
        monkeypatch,
        capsys,
        "sample",
        "--model",
        "someone/some-model",
        "--layouts",
        str(lay),
        "--out",
        str(tmp_path / "o"),
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert code == 2 and len(err) == 1 and "Hugging Face cache" in err[0] and "init-model" in err[0]
    code, err = cli_error(monkeypatch, capsys, "init-model", "--out", str(tmp_path / "m"))
    assert code == 2 and len(err) == 1 and "--tiny" in err[0]
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(UserError, match="tokenizer"):
        load_components(broken)
