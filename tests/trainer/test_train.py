"""Training: frozen weights stay frozen, a tiny model overfits, SIGKILL + --resume is exact."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.core.dataset import read_dataset
from pipeline.core.errors import UserError
from tests.train_fixtures import kill_at_first_checkpoint, make_dataset
from trainer.cache import encode_dataset, size_multiple
from trainer.data import Augment, ImageBatches
from trainer.objective import diffusion_loss, predict_x0, training_target
from trainer.train import TrainConfig, encode_batch, lr_at, monitor_samples, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RES = 64  # the tiny latent model's own: 8x8 latents


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("train")
    model = tiny_model
    data = make_dataset(root)
    return {"root": root, "model": str(model), "data": str(data)}


def _cfg(world, out, **kw):
    base = {
        "model": world["model"],
        "data": world["data"],
        "out": str(out),
        "steps": 3,
        "batch_size": 2,
        "warmup": 2,
        "lr": 1e-3,
        "resolution": RES,
        "checkpoint_every": 100,
        "monitor_every": 100,
        "monitor_samples": 2,
    }
    return TrainConfig(**(base | kw))


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_target_and_one_step_reconstruction_agree(kind):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=kind
    )
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 4, 8, 8, generator=g), torch.randn(6, 4, 8, 8, generator=g)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    noisy = sched.add_noise(x0, noise, t)
    target = training_target(sched, x0, noise, t)
    # float32: the inversion divides by sqrt(alpha) or sqrt(1 - alpha), small at the ends of the
    # schedule, amplifying float32 rounding (~1e-7 x |values| ~ 4) to ~1e-5; 2e-4 leaves margin
    torch.testing.assert_close(predict_x0(sched, noisy, target, t), x0, atol=2e-4, rtol=0)
    # a predictor that knows x0 has zero loss: the loss uses the scheduler's own add_noise

    def oracle(x, ts, **_):
        a = sched.alphas_cumprod[ts].view(-1, 1, 1, 1)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return SimpleNamespace(sample=training_target(sched, x0, eps, ts))

    loss = diffusion_loss(oracle, sched, x0, None, None, torch.Generator().manual_seed(1))
    assert loss.item() < 1e-6


def test_lr_warms_up_linearly_then_stays():
    cfg = TrainConfig(model="m", data="d", out="o", lr=1e-3, warmup=4)
    # float arithmetic of step / warmup * lr: pytest.approx's rtol 1e-6
    assert [lr_at(s, cfg) for s in range(6)] == pytest.approx(
        [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3]
    )


def test_no_gradient_reaches_frozen_weights(world):
    from trainer.model import freeze_for_adapters, load_components

    comps = load_components(world["model"], gated=True, seed=0)
    params = freeze_for_adapters(comps.unet)
    trainable = {id(p) for p in params}
    frozen = [
        (n, p)
        for m in (comps.unet, comps.vae, comps.text_encoder)
        for n, p in m.named_parameters()
        if id(p) not in trainable
    ]
    before = {n: p.detach().clone() for n, p in frozen}
    adapters_before = [p.detach().clone() for p in params]
    src = ImageBatches(
        read_dataset(world["data"]),
        comps.tokenizer,
        resolution=32,
        multiple=size_multiple(comps),
        augment=Augment(0.0, 0.0),
    )
    idx = np.flatnonzero(src.bucket_of == src.bucket_of[0])
    latents, cap, gligen = encode_batch(comps, src(idx, np.random.default_rng(0)), "cpu", True)
    opt = torch.optim.AdamW(params, lr=1e-2)
    for step in range(2):
        loss = diffusion_loss(
            comps.unet, comps.scheduler, latents, cap, gligen, torch.Generator().manual_seed(0)
        )
        loss.backward()
        assert all(p.grad is None for _, p in frozen)
        assert all(p.grad is not None for p in params)
        # closed gates (tanh(0) = 0) pass gradient only to themselves on the first step;
        # once open, the attention and position_net weights learn too
        alive = sum(float(p.grad.abs().sum()) > 0 for p in params)
        assert alive > (0 if step == 0 else len(params) // 2)
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert all(torch.equal(before[n], p) for n, p in frozen)  # bit-identical
    assert sum(not torch.equal(a, p) for a, p in zip(adapters_before, params)) > len(params) // 2


def test_training_loop_changes_only_adapters_and_writes_outputs(world, tmp_path):
    from trainer.model import is_adapter_key, load_adapters, load_components

    cache = encode_dataset(world["data"], world["model"], tmp_path / "cache", resolution=RES)
    result = train(_cfg(world, tmp_path / "run", data=str(cache), monitor_every=2))
    fresh = load_components(world["model"], gated=True, seed=0).unet
    trained = dict(result["unet"].named_parameters())
    changed = {n for n, p in fresh.named_parameters() if not torch.equal(p, trained[n])}
    assert changed and all(is_adapter_key(n) for n in changed)
    assert result["trainable_parameters"] < result["unet_parameters"]
    load_adapters(fresh, tmp_path / "run" / "adapters.safetensors")
    assert all(torch.equal(p, trained[n]) for n, p in fresh.named_parameters())
    metrics = json.loads((tmp_path / "run" / "dvclive" / "metrics.json").read_text())
    assert metrics["step"] == 3 and np.isfinite(metrics["train"]["loss"])
    assert np.isfinite(metrics["detail"]["psnr"]) and metrics["train"]["lr"] == pytest.approx(
        1e-3
    )  # rtol 1e-6
    lrs = _metric(tmp_path / "run", "train/lr", "lr")
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3])  # float lr schedule: pytest.approx rtol 1e-6
    assert len(_metric(tmp_path / "run", "detail/psnr", "psnr")) == 2  # steps 2 and 3 (the last)


def test_gate_warm_start_and_timestep_bias_reach_the_run(world, tmp_path):
    """--attn-gate-init sets alpha_attn only; one Adam step then moves it by about lr."""
    result = train(
        _cfg(
            world,
            tmp_path / "run",
            steps=1,
            monitor_every=0,
            attn_gate_init=0.5,
            timestep_bias="later",
            timestep_bias_multiplier=10.0,
        )
    )
    alphas = {n: float(p.detach()) for n, p in result["unet"].named_parameters() if ".alpha_" in n}
    assert alphas and all(
        abs(v - 0.5) < 2e-3 for n, v in alphas.items() if n.endswith("alpha_attn")
    )
    assert all(abs(v) < 2e-3 for n, v in alphas.items() if n.endswith("alpha_dense"))
    with pytest.raises(UserError):
        train(_cfg(world, tmp_path / "bad", timestep_bias="middle"))


def _metric(run, name, col):
    path = run / "dvclive" / "plots" / "metrics" / f"{name}.tsv"
    return [float(r[col]) for r in csv.DictReader(path.open(), delimiter="\t")]


def _fixed_loss(unet, comps, batch, gated):
    latents, cap, gligen = encode_batch(comps, batch, "cpu", gated)
    with torch.no_grad():
        return float(
            np.mean(
                [
                    diffusion_loss(
                        unet,
                        comps.scheduler,
                        latents,
                        cap,
                        gligen,
                        torch.Generator().manual_seed(k),
                    ).item()
                    for k in range(8)
                ]
            )
        )


@pytest.mark.slow
def test_tiny_model_overfits_two_samples(world, tmp_path, tiny_pixel_model):
    from trainer.model import load_components

    # pixel space: a random tiny VAE's latents are ~0.04 in scale, far below the noise,
    # so one-step reconstructions through it barely change however well the UNet fits
    model = str(tiny_pixel_model)
    data = make_dataset(tmp_path, sizes=((32, 32), (32, 32)))
    comps = load_components(model, gated=False)
    src = ImageBatches(
        read_dataset(data),
        comps.tokenizer,
        resolution=16,
        multiple=4,
        augment=Augment(0.0, 0.0, 0.0),
        random_crop=False,
    )
    batch = src(np.arange(2), np.random.default_rng(0))
    before = _fixed_loss(comps.unet, comps, batch, False)
    cfg = _cfg(
        world,
        tmp_path / "run",
        model=model,
        data=str(data),
        mode="base",
        steps=80,
        lr=2e-3,
        warmup=10,
        caption_drop=0.0,
        grounding_drop=0.0,
        resolution=16,
    )
    monitor = monitor_samples(cfg, comps, "cpu", False)
    psnr_before = monitor(comps.unet)["detail/psnr"]
    result = train(cfg)
    after = _fixed_loss(result["unet"].eval(), comps, batch, False)
    print(f"fixed-noise loss {before:.3f} -> {after:.3f}")
    assert after < 0.15 and after < 0.25 * before, (before, after)
    # the detail monitor sees the better reconstructions of the samples it was fitted to
    psnr_after = monitor(result["unet"])["detail/psnr"]
    print(f"detail monitor PSNR {psnr_before:.1f} -> {psnr_after:.1f} dB")
    assert psnr_after > psnr_before + 3, (psnr_before, psnr_after)
    assert (tmp_path / "run" / "model" / "unet").is_dir()  # base mode writes a whole model folder


def _cli(world, out, *extra):
    return [
        sys.executable,
        "-m",
        "pipeline.cli",
        "-q",
        "train",
        "--model",
        world["model"],
        "--data",
        world["data"],
        "--out",
        str(out),
        "--steps",
        "8",
        "--batch-size",
        "2",
        "--warmup",
        "2",
        "--lr",
        "1e-3",
        "--resolution",
        str(RES),
        "--checkpoint-every",
        "2",
        "--monitor-every",
        "3",
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_then_resume_continues_exactly(world, tmp_path):
    ref = train(_cfg(world, tmp_path / "ref", steps=8, checkpoint_every=2, monitor_every=3))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the resumed run, as the killed one
    step = kill_at_first_checkpoint(_cli(world, run), run, timeout=240)
    assert 2 <= step < 8 and not (run / "adapters.safetensors").exists()

    again = subprocess.run(_cli(world, run), env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 2 and "--resume" in again.stderr and again.stderr.count("\n") == 1
    done = subprocess.run(
        _cli(world, run, "--resume"), env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "train.json").read_text())["resumed_from"] == step

    from safetensors.torch import load_file

    a, b = (
        load_file(str(tmp_path / "ref" / "adapters.safetensors")),
        load_file(str(run / "adapters.safetensors")),
    )
    assert a.keys() == b.keys()
    for k in a:
        # float32 adapters after the same steps in two processes (one killed and resumed): same
        # data, noise and optimiser state; only the kernels' reduction order may differ (~1e-8)
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    # every step's loss, before and after the kill, is the uninterrupted run's: same data,
    # same noise; the steps redone after the kill are logged once
    steps = [
        int(r["step"])
        for r in csv.DictReader(
            (run / "dvclive/plots/metrics/train/loss.tsv").open(), delimiter="\t"
        )
    ]
    assert steps == list(range(1, 9))
    # float32 losses logged as text, the same computation in another process: 1e-5 absolute
    assert _metric(run, "train/loss", "loss") == pytest.approx(
        _metric(tmp_path / "ref", "train/loss", "loss"), abs=1e-5
    )
    assert ref["final_loss"] == pytest.approx(  # as the losses above
        json.loads((run / "train.json").read_text())["final_loss"], abs=1e-5
    )


@pytest.mark.slow
def test_two_processes_train_like_one_accumulating_two_batches(world, tmp_path):
    """Multi-GPU data sharding and noise: 2 DDP processes (gloo on CPU) == 1 process, accum 2."""
    cache = encode_dataset(world["data"], world["model"], tmp_path / "cache", resolution=RES)
    args = [
        "--model",
        world["model"],
        "--data",
        str(cache),
        "--steps",
        "3",
        "--batch-size",
        "1",
        "--warmup",
        "1",
        "--lr",
        "1e-3",
        "--monitor-every",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "GROUNDSET_QUIET": "1"}
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "pipeline.cli",
            "train",
            *args,
            "--out",
            str(tmp_path / "ddp"),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    train(
        TrainConfig(
            **{
                **vars(_cfg(world, tmp_path / "one")),
                "data": str(cache),
                "batch_size": 1,
                "grad_accum": 2,
                "warmup": 1,
                "monitor_every": 0,
                "resolution": None,
            }
        )
    )
    # two processes averaging gradients (all-reduce) vs one accumulating them: float32 sums in
    # another order; 1e-5 on the logged loss, 1e-6 on the adapters below
    assert _metric(tmp_path / "ddp", "train/loss", "loss") == pytest.approx(
        _metric(tmp_path / "one", "train/loss", "loss"), abs=1e-5
    )
    from safetensors.torch import load_file

    a, b = (
        load_file(str(tmp_path / "ddp" / "adapters.safetensors")),
        load_file(str(tmp_path / "one" / "adapters.safetensors")),
    )
    for k in a:  # as above: float32 sums in another order
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
