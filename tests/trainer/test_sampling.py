"""Sampling correctness: the checks that catch a model that "loses detail".

Oracle predictors (which know x0) make the sampler's arithmetic testable exactly: any
slip in timestep indexing, training target or scaling shows up as a failure to recover
x0. The tiny random diffusers model checks the real pipeline paths.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from pipeline.core.errors import UserError
from trainer.diffusion import make_sampler
from trainer.generate import denoise, generate, grounding_tensors, initial_noise, to_uint8
from trainer.gligen_folder import gligen_pipeline
from trainer.model import adapter_names, from_latents, load_components, to_latents
from trainer.objective import diffusion_loss, predict_x0, timestep_weights, training_target

PREDICTIONS = ("epsilon", "v_prediction", "sample")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny(tiny_model):
    return tiny_model


def sd_scheduler(prediction_type="epsilon"):
    return DDPMScheduler.from_config(
        {
            "num_train_timesteps": 1000,
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "clip_sample": False,
            "steps_offset": 1,
            "set_alpha_to_one": False,
            "prediction_type": prediction_type,
        }
    )


class Oracle(torch.nn.Module):
    """A UNet stand-in that knows x0: it returns the exact training target for its input.

    It computes the target with ``training_target`` and indexes the schedule with the
    timestep it is given, so a wrong target or a step index passed as a timestep breaks
    recovery. It records what it was called with.
    """

    def __init__(self, scheduler, x0):
        super().__init__()
        self.scheduler, self.x0, self.seen = scheduler, x0, []

    def forward(self, x, t, encoder_hidden_states=None, cross_attention_kwargs=None):
        self.seen.append(t)
        a = self.scheduler.alphas_cumprod[t.long()].to(x.dtype)
        eps = (x - a.sqrt() * self.x0) / (1 - a).sqrt()
        t_batch = t.reshape(1).expand(len(x))
        return SimpleNamespace(sample=training_target(self.scheduler, self.x0, eps, t_batch))


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize("sampler_name", ["ddim", "dpm"])
def test_oracle_sampling_recovers_x0(prediction_type, sampler_name):
    train = sd_scheduler(prediction_type)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    x_t = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    oracle = Oracle(train, x0)
    sampler = make_sampler(train, sampler_name)
    if sampler_name == "ddim":  # land on t=-1 (alpha=1) so the last step returns x0 itself
        sampler = DDIMScheduler.from_config(sampler.config, set_alpha_to_one=True)
    out = denoise(
        oracle,
        sampler,
        x_t,
        torch.zeros(2, 1, 1),
        None,
        None,
        steps=20,
        guidance_scale=1.0,
        beta=0.0,
        eta=0.0,
    )
    # float64 latents through 20 sampler steps whose scheduler tables are float32 (alphas ~1e-7
    # relative): the oracle's x0 comes back to ~1e-7; 1e-6 is a wrong step by orders
    torch.testing.assert_close(out, x0, atol=1e-6, rtol=1e-6)
    seen = torch.stack(oracle.seen)
    assert seen.dtype == torch.int64 and torch.equal(seen, sampler.timesteps)


def test_ddim_with_sd_final_alpha_ends_where_the_schedule_says():
    """SD's config keeps alpha_0 < 1: the last DDIM step lands on t=0, not on x0."""
    train = sd_scheduler()
    g = torch.Generator().manual_seed(1)
    x0, x_t = (
        torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64),
        torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64),
    )
    oracle = Oracle(train, x0)
    out = denoise(
        oracle,
        make_sampler(train, "ddim"),
        x_t,
        torch.zeros(2, 1, 1),
        None,
        None,
        steps=10,
        guidance_scale=1.0,
        beta=0.0,
    )
    # The implied noise is constant along a DDIM eta=0 path: the first step's eps.
    a_T = train.alphas_cumprod[int(oracle.seen[0])].double()
    eps = (x_t - a_T.sqrt() * x0) / (1 - a_T).sqrt()
    a0 = train.alphas_cumprod[0].double()
    # as above: float64 state, float32 alphas; 10 DDIM steps
    torch.testing.assert_close(out, a0.sqrt() * x0 + (1 - a0).sqrt() * eps, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_add_noise_and_training_target_agree(prediction_type):
    sched = sd_scheduler(prediction_type)
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    t = torch.tensor([0, 1, 500, 999])
    noisy = sched.add_noise(x0, noise, t)
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    # float32 throughout, the same formula: the default float32 tolerances (1e-5 rel, 1.3e-6 abs)
    torch.testing.assert_close(
        noisy, a.sqrt() * x0 + (1 - a).sqrt() * noise
    )  # integer t indexes the table
    target = training_target(sched, x0, noise, t)
    expected = {
        "epsilon": noise,
        "sample": x0,
        "v_prediction": a.sqrt() * noise - (1 - a).sqrt() * x0,
    }
    # float32, the same formula: the default float32 tolerances
    torch.testing.assert_close(target, expected[prediction_type])
    # float32: inverting at t=999 divides by sqrt(alpha) ~ 0.07 (or by sqrt(1 - alpha) near t=0),
    # amplifying the float32 rounding of noisy (~1e-7 x |noise| ~ 4) to ~1e-5; 2e-4 leaves margin
    torch.testing.assert_close(predict_x0(sched, noisy, target, t), x0, atol=2e-4, rtol=1e-4)
    for i, ti in enumerate(t.tolist()):  # the scheduler's own inversion of a perfect prediction
        step = sched.step(target[i : i + 1], ti, noisy[i : i + 1])
        torch.testing.assert_close(step.pred_original_sample, x0[i : i + 1], atol=2e-4, rtol=1e-4)


class Recorder(torch.nn.Module):
    """A UNet stand-in for the training loss: records the timesteps it is handed."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, t, encoder_hidden_states=None, cross_attention_kwargs=None):
        self.seen.append(t)
        return SimpleNamespace(sample=torch.zeros_like(x))


def test_timesteps_dtype_and_range():
    sched, unet = sd_scheduler(), Recorder()
    g = torch.Generator().manual_seed(0)
    diffusion_loss(
        unet, sched, torch.randn(20_000, 1, 1, 1), torch.zeros(20_000, 1, 1), generator=g
    )
    t = unet.seen[0]
    assert (
        t.dtype == torch.int64
        and t.shape == (20_000,)
        and int(t.min()) == 0
        and int(t.max()) == 999
    )
    assert abs(float(t.double().mean()) - 499.5) < 10  # uniform over 0..999
    for name in ("ddim", "dpm"):
        s = make_sampler(sched, name)
        s.set_timesteps(25)
        ts = s.timesteps
        assert ts.dtype == torch.int64 and bool((ts[:-1] > ts[1:]).all())
        assert 0 <= int(ts.min()) and int(ts.max()) < 1000 and len(ts) == 25
    ddim = make_sampler(sched, "ddim")
    ddim.set_timesteps(50)
    assert (
        int(ddim.timesteps[0]) == 981 and int(ddim.timesteps[-1]) == 1
    )  # SD: leading spacing, offset 1
    assert isinstance(make_sampler(sched, "dpm"), DPMSolverMultistepScheduler)


def test_timestep_bias_weights_the_chosen_end():
    """diffusers' SDXL-script bias: the last quarter drawn 4x as often per timestep, int64."""
    assert timestep_weights(1000, "none") is None and timestep_weights(1000, "later", 1.0) is None
    sched, unet = sd_scheduler(), Recorder()
    w = timestep_weights(1000, "later", multiplier=4.0, portion=0.25)
    assert abs(float(w.sum()) - 1) < 1e-9 and float(w[999] / w[0]) == 4.0
    diffusion_loss(
        unet,
        sched,
        torch.randn(20_000, 1, 1, 1),
        torch.zeros(20_000, 1, 1),
        generator=torch.Generator().manual_seed(0),
        weights=w,
    )
    t = unet.seen[0]
    assert t.dtype == torch.int64 and 0 <= int(t.min()) and int(t.max()) <= 999
    assert abs(float((t >= 750).double().mean()) - 4 / 7) < 0.02  # 4*250 / (750 + 4*250)
    early = timestep_weights(1000, "earlier", multiplier=3.0, portion=0.1)
    assert float(early[0] / early[999]) == 3.0 and float(early[100] / early[999]) == 1.0
    for bad in (
        {"bias": "middle"},
        {"bias": "later", "multiplier": -1.0},
        {"bias": "later", "multiplier": 2.0, "portion": 0.0},
    ):
        with pytest.raises(UserError):
            timestep_weights(1000, **bad)


def test_vae_scaling_factor_applied_once_each_way(tiny):
    comps = load_components(tiny, gated=False)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        raw = comps.vae.encode(x).latent_dist.mode()
        z1 = to_latents(comps, x, sample=False)
        # float32 multiply by the same factor: default float32 tolerance (1e-5 rel)
        torch.testing.assert_close(z1, raw * 0.18215)
        back1 = from_latents(comps, z1)
        # Tolerance: undoing the factor in float32 moves each latent by about one ulp
        # (relative 6e-8); the decoder amplifies that, and its float32 reductions differ with
        # the thread count (1.1e-5 was seen on a fresh clone). A factor applied twice or
        # not at all changes the images by order 1, four orders above 1e-4.
        torch.testing.assert_close(back1, comps.vae.decode(raw).sample, atol=1e-4, rtol=1e-4)
        comps.vae.register_to_config(scaling_factor=0.5)
        z2 = to_latents(comps, x, sample=False)
        # float32: x*0.5 vs (x*0.18215)*(0.5/0.18215), two roundings apart (~1e-7 relative)
        torch.testing.assert_close(z2, z1 * (0.5 / 0.18215), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(from_latents(comps, z2), back1, atol=1e-4, rtol=1e-4)
        # sampling decodes its final latents with the factor undone exactly once
        images, latents = generate(comps, ["a dog"], None, [0], steps=2, guidance_scale=1.0)
        direct = to_uint8(comps.vae.decode(latents / 0.5).sample)
        assert np.abs(images.astype(int) - direct.astype(int)).max() <= 1


def open_gates(unet, seed=1):
    names, g = adapter_names(unet), torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name in names:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def layout(comps, n=2):
    owner, slot = np.array([0, 0, 1]), np.array([0, 1, 0])
    boxes = np.array([[0.1, 0.1, 0.5, 0.6], [0.5, 0.2, 0.9, 0.9], [0.2, 0.3, 0.8, 0.7]], np.float32)
    return grounding_tensors(
        comps,
        owner[owner < n],
        slot[owner < n],
        boxes[owner < n],
        ["dog", "cat", "car"][: int((owner < n).sum())],
        n,
    )


def test_beta_zero_is_exactly_the_base_model(tiny):
    base = load_components(tiny, gated=False)
    gated = load_components(tiny)
    open_gates(gated.unet)
    caps, seeds = ["a dog and a cat", "a car"], [7, 8]
    ref, ref_lat = generate(base, caps, None, seeds, steps=3, guidance_scale=7.5)
    zero, zero_lat = generate(
        gated, caps, layout(gated), seeds, beta=0.0, steps=3, guidance_scale=7.5
    )
    assert torch.equal(zero_lat, ref_lat) and np.array_equal(zero, ref)
    _, grounded = generate(gated, caps, layout(gated), seeds, beta=1.0, steps=3, guidance_scale=7.5)
    assert (grounded - ref_lat).abs().max() > 1e-3  # the gates do act when on


def test_matches_diffusers_gligen_pipeline(tiny):
    pytest.importorskip("diffusers.pipelines.deprecated.stable_diffusion_gligen")
    comps = load_components(tiny)
    open_gates(comps.unet)
    pipe = gligen_pipeline(comps, "ddim")
    noise = initial_noise(comps, [11])
    boxes = [[0.1, 0.1, 0.5, 0.6], [0.5, 0.2, 0.9, 0.9]]
    theirs = pipe(
        prompt="a dog and a cat",
        gligen_phrases=["dog", "cat"],
        gligen_boxes=boxes,
        gligen_scheduled_sampling_beta=0.5,
        num_inference_steps=4,
        guidance_scale=7.5,
        latents=noise.clone(),
        output_type="latent",
    ).images
    ours = generate(
        comps, ["a dog and a cat"], layout(comps, 1), [11], beta=0.5, steps=4, guidance_scale=7.5
    )[1]
    # the same float32 UNet and DDIM steps as diffusers' GLIGEN pipeline, computed in another
    # order (batched CFG, grounding tensors built by us): reduction order only, ~1e-6 here
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    other_beta = generate(comps, ["a dog and a cat"], layout(comps, 1), [11], beta=1.0, steps=4)[1]
    assert (other_beta - theirs).abs().max() > 1e-4


def test_exported_gligen_folder_opens_in_diffusers(tiny, tmp_path):
    pipes = pytest.importorskip("diffusers.pipelines.deprecated.stable_diffusion_gligen")
    from trainer.gligen_folder import write_gligen_folder
    from trainer.model import is_gated, save_adapters

    comps = load_components(tiny)
    open_gates(comps.unet)
    adapters = save_adapters(comps.unet, tmp_path / "a.safetensors")
    folder = write_gligen_folder(tiny, adapters, tmp_path / "gligen")
    pipe = pipes.StableDiffusionGLIGENPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    noise = initial_noise(comps, [3])
    theirs = pipe(
        prompt="a dog",
        gligen_phrases=["dog"],
        gligen_boxes=[[0.1, 0.2, 0.6, 0.9]],
        gligen_scheduled_sampling_beta=1.0,
        num_inference_steps=3,
        latents=noise.clone(),
        output_type="latent",
    ).images
    gl = grounding_tensors(
        comps,
        np.array([0]),
        np.array([0]),
        np.array([[0.1, 0.2, 0.6, 0.9]], np.float32),
        ["dog"],
        1,
    )
    ours = generate(comps, ["a dog"], gl, [3], beta=1.0, steps=3, latents=noise.clone())[1]
    # as above: float32, the same operations, reduction order only
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert is_gated(load_components(folder).unet)  # and groundset reads it back as GLIGEN
