"""The encode cache: equals direct encoding, resumes after a crash, feeds training batches."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.core.dataset import read_dataset
from pipeline.core.errors import UserError
from tests.train_fixtures import make_dataset
from trainer.cache import encode_dataset
from trainer.cache_batches import CacheBatches
from trainer.data import Augment, load_pixels
from trainer.layout import crop_boxes, layouts_from_records

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model):
    from trainer.model import load_components

    root = tmp_path_factory.mktemp("cache")
    model = tiny_model
    data = make_dataset(root)
    cache = encode_dataset(data, model, root / "cache", shard_size=2, dtype="float32", batch_size=3)
    return {
        "root": root,
        "model": model,
        "data": data,
        "cache": cache,
        "comps": load_components(model, gated=False),
    }


def _shard(cache, s):
    d = cache / "shards" / f"shard-{s:05d}"
    return {f.stem: np.load(f) for f in d.glob("*.npy")}


def test_cache_equals_direct_encoding(world):
    from trainer.model import encode_phrases, encode_prompts, to_latents

    comps, cache = world["comps"], world["cache"]
    meta = json.loads((cache / "cache.json").read_text())
    assert meta["complete"] and meta["n_samples"] == 4
    src = CacheBatches(cache)
    ds = read_dataset(world["data"])
    L = layouts_from_records(ds.records)
    phrases = json.loads((cache / "phrases.json").read_text())
    np.testing.assert_allclose(
        # a float32 cache (dtype='float32') against the float32 CLIP run again in another batch:
        # reduction order only (~1e-7 on values of order 1); the same for the null caption
        np.load(cache / "phrases.npy"),
        encode_phrases(comps, phrases).numpy(),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        np.load(cache / "null_caption.npy"), encode_prompts(comps, [""])[0].numpy(), atol=1e-5
    )
    for i in range(len(src)):
        p = {k: v[i] for k, v in src.plan.items()}
        shard = _shard(cache, p["shard"])
        j, row = p["slot"], p["row"]
        path = ds.image_path("synth", L.files[row])
        size, crop = (
            (p["resized_w"], p["resized_h"]),
            (p["left"], p["top"], p["bucket_w"], p["bucket_h"]),
        )
        for flip, key in ((False, "latents"), (True, "latents_flip")):
            px = torch.from_numpy(load_pixels(path, size, crop, flip))[None]
            # float rounding of the 4-level VAE varies ~1e-5 with batch, threads and memory
            # layout; latents have std ~0.05, so a wrong crop, flip or scaling fails by far
            np.testing.assert_allclose(
                shard[key][j], to_latents(comps, px, sample=False)[0].numpy(), atol=1e-4
            )
        assert shard["latents"].shape[2:] == (p["bucket_h"] // 8, p["bucket_w"] // 8)
        first = shard["captions"][shard["caption_offsets"][j]]
        np.testing.assert_allclose(
            # as the phrases above: float32, batching order only
            first,
            encode_prompts(comps, [L.captions[row][0]])[0].numpy(),
            atol=1e-5,
        )
        boxes, mask = crop_boxes(
            L.boxes[[row]],
            L.mask[[row]],
            p["resized_w"],
            p["resized_h"],
            p["left"],
            p["top"],
            p["bucket_w"],
            p["bucket_h"],
            0.01,
        )
        np.testing.assert_array_equal(shard["boxes"][j], boxes[0])
        np.testing.assert_array_equal(shard["mask"][j], mask[0])
        assert [phrases[k] for k in shard["phrase_ids"][j][mask[0]]] == [
            L.phrases[k] for k in L.phrase_ids[row][mask[0]]
        ]


def test_cache_batches_flip_and_drops(world):
    cache = world["cache"]
    src = CacheBatches(cache, Augment(caption_drop=1.0, grounding_drop=1.0, flip_p=1.0))
    idx = np.flatnonzero(src.bucket_of == src.bucket_of[0])
    b = src(idx, np.random.default_rng(0))
    shard = _shard(cache, src.plan["shard"][idx[0]])
    np.testing.assert_allclose(
        # a float32 copy of what the shard holds: the default rtol 1e-7 is equality in effect
        b["latents"][0].numpy(),
        shard["latents_flip"][src.plan["slot"][idx[0]]],
    )
    null = np.load(cache / "null_caption.npy")
    # a float32 copy: equal
    assert np.allclose(b["caption_emb"].numpy(), null[None])
    assert (
        b["masks"].sum() == 0 and b["phrase_emb"].abs().sum() == 0 and b["boxes"].abs().sum() == 0
    )

    src = CacheBatches(cache, Augment(caption_drop=0.0, grounding_drop=0.0, flip_p=0.0))
    b = src(idx, np.random.default_rng(0))
    slot = src.plan["slot"][idx[0]]
    # float32 copies: equal (default rtol 1e-7)
    np.testing.assert_allclose(b["latents"][0].numpy(), shard["latents"][slot])
    m = b["masks"][0].bool().numpy()
    assert m.any() and np.array_equal(m, shard["mask"][slot])
    emb = np.load(cache / "phrases.npy")[shard["phrase_ids"][slot][m]]
    # float32 copies: equal (default rtol 1e-7)
    np.testing.assert_allclose(b["phrase_emb"][0][m].numpy(), emb)


def test_encode_resumes_after_a_crash(world, tmp_path, monkeypatch):
    import trainer.model

    real, calls = trainer.model.to_latents, {"n": 0}

    def crash_on_fifth(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # two calls per chunk (plain + flipped): dies inside shard 2
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    out = tmp_path / "cache"
    monkeypatch.setattr(trainer.model, "to_latents", crash_on_fifth)
    with pytest.raises(RuntimeError, match="simulated"):
        encode_dataset(world["data"], world["model"], out, shard_size=1, dtype="float32")
    assert not json.loads((out / "cache.json").read_text())["complete"]
    done = sorted(p.name for p in (out / "shards").iterdir())
    assert done == ["shard-00000", "shard-00001"]  # no half-written shard left behind
    stamp = {f.name: f.stat().st_mtime_ns for f in (out / "shards" / "shard-00000").iterdir()}
    monkeypatch.setattr(trainer.model, "to_latents", real)
    with pytest.raises(UserError, match="other data, model or params"):
        encode_dataset(world["data"], world["model"], out, shard_size=1, dtype="float32", seed=1)
    calls["n"] = 0
    monkeypatch.setattr(
        trainer.model,
        "to_latents",
        lambda *a, **k: (calls.__setitem__("n", calls["n"] + 1), real(*a, **k))[1],
    )
    encode_dataset(world["data"], world["model"], out, shard_size=1, dtype="float32")
    assert calls["n"] == 4  # only the two missing shards were encoded
    assert {
        f.name: f.stat().st_mtime_ns for f in (out / "shards" / "shard-00000").iterdir()
    } == stamp
    clean = encode_dataset(
        world["data"], world["model"], tmp_path / "clean", shard_size=1, dtype="float32"
    )
    for s in range(4):
        a, b = _shard(out, s), _shard(clean, s)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_encode_cli_bad_input_is_one_line(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "encode",
            str(tmp_path / "nope"),
            "--model",
            str(tmp_path),
            "--out",
            str(tmp_path / "c"),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "not a groundset dataset" in r.stderr
