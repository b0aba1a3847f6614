"""SDXL on the tiny SDXL folders: assembly, phrases, time ids, the cache, training, sampling.

The SD 1.x versions of these checks live beside this file; here the same mechanism is
checked on an SDXL-shaped model (``trainer.tiny_sdxl``), plus what only SDXL has: the
second text encoder's pooled embedding, the size/crop time ids and the refiner.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from pipeline.core.dataset import read_dataset
from pipeline.core.errors import UserError
from tests.train_fixtures import kill_at_first_checkpoint, make_dataset
from trainer.arch import SDXL, SDXL_REFINER, flipped_left, time_id_count, time_ids
from trainer.cache import encode_dataset
from trainer.cache_batches import CacheBatches
from trainer.data import Augment, load_pixels
from trainer.layout import layouts_from_records

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZES = ((192, 128), (128, 128), (128, 192), (160, 128))  # landscape, square, portrait


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_sdxl_model):
    from trainer.model import load_components

    root = tmp_path_factory.mktemp("sdxl")
    data = make_dataset(root, sizes=SIZES)
    cache = encode_dataset(data, tiny_sdxl_model, root / "cache", dtype="float32", batch_size=3)
    return {
        "root": root,
        "model": str(tiny_sdxl_model),
        "data": data,
        "cache": cache,
        "comps": load_components(tiny_sdxl_model, gated=False),
    }


def _shard(cache, s):
    d = cache / "shards" / f"shard-{s:05d}"
    return {f.stem: np.load(f) for f in d.glob("*.npy")}


def test_tiny_folders_are_sdxl_shaped(world, tiny_sdxl_refiner):
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    from trainer.model import load_components

    c = world["comps"]
    assert c.arch == SDXL and c.force_zeros_for_empty_prompt
    assert c.unet.config.addition_embed_type == "text_time"
    assert isinstance(c.text_encoder_2, CLIPTextModelWithProjection)
    width = c.text_encoder.config.hidden_size + c.text_encoder_2.config.hidden_size
    assert c.unet.config.cross_attention_dim == width
    assert time_id_count(c.unet.config, c.text_encoder_2.config.projection_dim) == 6
    assert c.resolution == 128  # SDXL's 1024 / 8, as the SD 1.x tiny model's 64 is 512 / 8
    r = load_components(tiny_sdxl_refiner, gated=False)
    assert r.arch == SDXL_REFINER and r.text_encoder is None and not r.force_zeros_for_empty_prompt
    assert time_id_count(r.unet.config, r.text_encoder_2.config.projection_dim) == 5
    # the refiner shares the base's VAE and second text encoder, as SDXL's does
    for a, b in ((c.vae, r.vae), (c.text_encoder_2, r.text_encoder_2)):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(UserError, match="refiner"):
        load_components(tiny_sdxl_refiner, gated=True)
    # complete folders: diffusers' own pipelines open them
    StableDiffusionXLPipeline.from_pretrained(world["model"])
    StableDiffusionXLImg2ImgPipeline.from_pretrained(tiny_sdxl_refiner)


def test_gated_sdxl_unet_is_assembled_as_for_sd1(world):
    """fuser + position_net added (diffusers' names), all else frozen, closed gates = base."""
    from trainer.model import adapter_state_dict, freeze_for_adapters, load_components
    from trainer.objective import unet_cond
    from trainer.text import encode_captions, encode_phrases

    base = world["comps"]
    gated = load_components(world["model"], gated=True, seed=0)
    params = freeze_for_adapters(gated.unet)
    names = {n for n, p in gated.unet.named_parameters() if p.requires_grad}
    assert names == set(adapter_state_dict(gated.unet)) and len(params) == len(names)
    assert all(n.startswith("position_net.") or ".fuser." in n for n in names)
    # position_net takes phrases as wide as the UNet's cross-attention (2048 on SDXL)
    dim = gated.unet.config.cross_attention_dim
    assert gated.unet.position_net.positive_len == dim
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 16, 16, generator=g)
    hidden, pooled = encode_captions(base, ["a dog", "two cats"])
    cond = unet_cond(hidden, pooled, torch.tensor(time_ids([(128, 128)] * 2, (0, 0), (128, 128))))
    gligen = {
        "boxes": torch.tensor([[[0.1, 0.1, 0.6, 0.7]] + [[0.0] * 4] * 29] * 2),
        "positive_embeddings": torch.cat(
            [encode_phrases(base, ["dog", "cat"])[:, None], torch.zeros(2, 29, dim)], 1
        ),
        "masks": torch.tensor([[1.0] + [0.0] * 29] * 2),
    }
    t = torch.tensor([500, 500])
    with torch.no_grad():
        want = base.unet(z, t, **cond).sample
        got = gated.unet(z, t, **cond, cross_attention_kwargs={"gligen": gligen}).sample
    # tanh(0) = 0: every fuser adds exactly 0, so the output is the base model's bit for bit
    assert torch.equal(got, want)


def test_phrase_embeddings_are_both_pooled_outputs_side_by_side(world):
    """IGLIGEN-XL's choice: CLIP-L pooled output beside bigG's projected pooled output."""
    from trainer.text import encode_phrases

    c = world["comps"]
    phrases = ["dog", "a red car on a big table"]
    with torch.no_grad():
        t1 = c.text_encoder(**c.tokenizer(phrases, padding=True, return_tensors="pt"))
        t2 = c.text_encoder_2(**c.tokenizer_2(phrases, padding=True, return_tensors="pt"))
    emb = encode_phrases(c, phrases)
    # the same float32 encoders on the same padded batch: the default float32 tolerances
    torch.testing.assert_close(emb, torch.cat([t1.pooler_output, t2.text_embeds], -1))
    assert emb.shape == (2, c.unet.config.cross_attention_dim)
    # the end-of-text token comes before any padding (causal mask): a phrase's embedding
    # does not depend on the batch; float32 batching differences stay ~1e-6
    torch.testing.assert_close(encode_phrases(c, ["dog"]), emb[:1], atol=1e-5, rtol=0)


def test_time_ids_layout_and_mirrored_crop():
    np.testing.assert_array_equal(
        time_ids([(300, 200)], (16, 0), (128, 96)), [[300, 200, 16, 0, 128, 96]]
    )
    np.testing.assert_array_equal(
        time_ids([(300, 200)] * 2, (16, 0), None, 6.0), [[300, 200, 16, 0, 6.0]] * 2
    )
    assert flipped_left(150, 10, 128) == 12  # 150 - 10 - 128: the mirror's window
    assert flipped_left(128, 0, 128) == 0  # an uncropped image stays uncropped when mirrored


def test_crop_condition_changes_unet_output(world):
    from trainer.objective import unet_cond
    from trainer.text import encode_captions

    c = world["comps"]
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    hidden, pooled = encode_captions(c, ["a dog"])
    t = torch.tensor([500])

    def out(crop, original=(128, 128)):
        ids = torch.tensor(time_ids([original], crop, (128, 128)))
        with torch.no_grad():
            return c.unet(z, t, **unet_cond(hidden, pooled, ids)).sample

    centred = out((0, 0))
    assert torch.equal(centred, out((0, 0)))  # deterministic: the difference below is the crop's
    # a random tiny UNet moves its prediction by ~1e-3 of its scale per 32 px of crop; a
    # condition that never reached the UNet would leave it bit-identical
    assert (out((32, 16)) - centred).abs().max() > 1e-4
    assert (out((0, 0), original=(512, 384)) - centred).abs().max() > 1e-4


def test_cache_holds_everything_training_needs(world):
    from trainer.model import to_latents
    from trainer.text import encode_captions, encode_phrases

    comps, cache = world["comps"], world["cache"]
    meta = json.loads((cache / "cache.json").read_text())
    assert meta["complete"] and meta["arch"] == SDXL and meta["n_samples"] == len(SIZES)
    buckets = {tuple(b) for b in meta["buckets"]}
    assert (128, 128) in buckets and (256, 64) in buckets and len(buckets) > 20  # SDXL's set
    phrases = json.loads((cache / "phrases.json").read_text())
    np.testing.assert_allclose(
        # a float32 cache against the float32 encoders run again in another batch: reduction order
        np.load(cache / "phrases.npy"),
        encode_phrases(comps, phrases).numpy(),
        atol=1e-5,
    )
    # SDXL's folder says force_zeros_for_empty_prompt: a dropped caption is zeros, pooled too
    assert not np.load(cache / "null_caption.npy").any()
    assert not np.load(cache / "null_pooled.npy").any()
    src = CacheBatches(cache)
    ds = read_dataset(world["data"])
    L = layouts_from_records(ds.records)
    for i in range(len(src)):
        p = {k: v[i] for k, v in src.plan.items()}
        shard, j, row = _shard(cache, p["shard"]), p["slot"], p["row"]
        path = ds.image_path("synth", L.files[row])
        size = (p["resized_w"], p["resized_h"])
        crop = (p["left"], p["top"], p["bucket_w"], p["bucket_h"])
        for flip, key in ((False, "latents"), (True, "latents_flip")):
            px = torch.from_numpy(load_pixels(path, size, crop, flip))[None]
            # as tests/trainer/test_cache.py: VAE float rounding ~1e-5, latents std ~0.05
            np.testing.assert_allclose(
                shard[key][j], to_latents(comps, px, sample=False)[0].numpy(), atol=1e-4
            )
        mirrored = p["resized_w"] - p["left"] - p["bucket_w"]
        orig, target = [p["height"], p["width"]], [p["bucket_h"], p["bucket_w"]]
        np.testing.assert_array_equal(shard["time_ids"][j], orig + [p["top"], p["left"]] + target)
        np.testing.assert_array_equal(
            shard["time_ids_flip"][j], orig + [p["top"], mirrored] + target
        )
        hidden, pooled = encode_captions(comps, [L.captions[row][0]])
        k = shard["caption_offsets"][j]
        np.testing.assert_allclose(shard["captions"][k], hidden[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(shard["pooled"][k], pooled[0].numpy(), atol=1e-5)


def test_caption_drop_drops_pooled_and_flip_takes_the_mirrors_time_ids(world):
    cache = world["cache"]
    idx, rng = np.array([0]), np.random.default_rng(0)
    p = {k: v[0] for k, v in CacheBatches(cache).plan.items()}
    shard = _shard(cache, p["shard"])
    kept = CacheBatches(cache, Augment(caption_drop=0.0, grounding_drop=0.0, flip_p=0.0))(idx, rng)
    np.testing.assert_array_equal(kept["pooled_emb"][0], shard["pooled"][0])
    np.testing.assert_array_equal(kept["time_ids"][0], shard["time_ids"][p["slot"]])
    drop = CacheBatches(cache, Augment(caption_drop=1.0, grounding_drop=0.0, flip_p=1.0))(idx, rng)
    assert not drop["caption_emb"].any() and not drop["pooled_emb"].any()
    np.testing.assert_array_equal(drop["time_ids"][0], shard["time_ids_flip"][p["slot"]])
    np.testing.assert_array_equal(drop["latents"][0], shard["latents_flip"][p["slot"]])


def test_image_batches_give_sdxl_conditioning_with_drops(world):
    """Training from images (no cache) builds the same kind of conditioning itself."""
    from trainer.data import ImageBatches
    from trainer.train import encode_batch

    c = world["comps"]
    src = ImageBatches(
        read_dataset(world["data"]),
        c.tokenizer,
        resolution=128,
        multiple=16,
        augment=Augment(caption_drop=1.0, grounding_drop=0.0, flip_p=0.0),
        arch=SDXL,
        tokenizer_2=c.tokenizer_2,
    )
    assert len(src.buckets) > 20  # SDXL's bucket set at the tiny budget
    batch = src(np.array([1]), np.random.default_rng(0))  # the square image: no crop
    _, cond, _ = encode_batch(c, batch, "cpu", gated=False)
    assert not cond["encoder_hidden_states"].any()
    assert not cond["added_cond_kwargs"]["text_embeds"].any()
    np.testing.assert_array_equal(
        cond["added_cond_kwargs"]["time_ids"], [[128, 128, 0, 0, 128, 128]]
    )


def _train_cfg(world, out, **kw):
    from trainer.train import TrainConfig

    base = {
        "model": world["model"],
        "data": str(world["cache"]),
        "out": str(out),
        "steps": 4,
        "batch_size": 1,
        "warmup": 1,
        "lr": 1e-3,
        "checkpoint_every": 2,
        "monitor_every": 2,
        "monitor_samples": 1,
        "attn_gate_init": 0.5,
    }
    return TrainConfig(**(base | kw))


def test_training_runs_no_encoder_and_resumes_exactly(world, tmp_path, monkeypatch):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from trainer.train import train

    def forbidden(*a, **k):
        raise AssertionError("an encoder ran during training from the cache")

    for cls, name in (
        (CLIPTextModel, "forward"),
        (CLIPTextModelWithProjection, "forward"),
        (AutoencoderKL, "encode"),
    ):
        monkeypatch.setattr(cls, name, forbidden)
    ref = train(_train_cfg(world, tmp_path / "ref"))
    train(_train_cfg(world, tmp_path / "run", steps=2))
    resumed = train(_train_cfg(world, tmp_path / "run", resume=True))
    assert resumed["resumed_from"] == 2
    a = load_file(str(tmp_path / "ref" / "adapters.safetensors"))
    b = load_file(str(tmp_path / "run" / "adapters.safetensors"))
    assert a.keys() == b.keys()
    for k in a:  # same batches, noise and optimiser state: equal up to float32 reordering
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    assert ref["final_loss"] == pytest.approx(resumed["final_loss"], abs=1e-6)
    # diffusers' key names: they load into diffusers' own gated SDXL UNet, nothing left over
    config = {k: v for k, v in ref["unet"].config.items() if not k.startswith("_")}
    fresh = UNet2DConditionModel.from_config(config)
    missing, unexpected = fresh.load_state_dict(a, strict=False)
    assert not unexpected and all(".fuser." not in m and "position_net" not in m for m in missing)


def test_sampling_equals_diffusers_sdxl_with_and_without_refiner(world, tiny_sdxl_refiner):
    """Closed gates: groundset's loop is StableDiffusionXLPipeline's, and with a refiner
    it is diffusers' ensemble of experts (denoising_end / denoising_start = 0.8)."""
    from diffusers import DDIMScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    from trainer.generate import generate, initial_noise
    from trainer.model import load_components

    c, r = world["comps"], load_components(tiny_sdxl_refiner, gated=False)
    base = StableDiffusionXLPipeline.from_pretrained(world["model"])
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(tiny_sdxl_refiner)
    for pipe in (base, refiner):
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
    z = initial_noise(c, [3])
    common = {"num_inference_steps": 5, "guidance_scale": 7.5, "output_type": "latent"}
    _, ours = generate(c, ["a dog"], None, [3], steps=5, latents=z)
    want = base("a dog", latents=z, **common).images
    # the same float32 operations in the same order: equal up to reduction order
    torch.testing.assert_close(ours, want, atol=1e-5, rtol=0)
    _, refined = generate(c, ["a dog"], None, [3], steps=5, latents=z, refiner=r)
    mid = base("a dog", latents=z, denoising_end=0.8, **common).images
    want = refiner("a dog", image=mid, denoising_start=0.8, **common).images
    torch.testing.assert_close(refined, want, atol=1e-5, rtol=0)
    assert (refined - ours).abs().max() > 1e-3  # the refiner did denoise the last steps


@pytest.mark.slow
def test_sigkill_then_resume_continues_exactly(world, tmp_path):
    """The CLI run killed at its first checkpoint and resumed equals the uninterrupted run."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    from trainer.train import train

    train(_train_cfg(world, tmp_path / "ref", steps=6, monitor_every=0))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "pipeline.cli", "--quiet", "train", "--model", world["model"]]
    cmd += ["--data", str(world["cache"]), "--out", str(run), "--steps", "6", "--batch-size", "1"]
    cmd += ["--warmup", "1", "--lr", "1e-3", "--checkpoint-every", "2", "--monitor-every", "0"]
    cmd += ["--attn-gate-init", "0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the resumed run, as the killed one
    step = kill_at_first_checkpoint(cmd, run, timeout=300)
    assert 2 <= step < 6 and not (run / "adapters.safetensors").exists()
    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "train.json").read_text())["resumed_from"] == step
    a = load_file(str(tmp_path / "ref" / "adapters.safetensors"))
    b = load_file(str(run / "adapters.safetensors"))
    for k in a:  # as the in-process resume above: float32 reordering only
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
