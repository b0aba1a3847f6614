"""The sample stage: images drawn for a dataset's layouts, resumable after a kill.

Runs on the shared tiny diffusers model; the sampler's arithmetic itself is checked in
``tests/trainer/test_sampling.py``.
"""

import json

import numpy as np
import pytest

from pipeline.core.dataset import read_dataset, write_dataset
from pipeline.core.errors import UserError
from pipeline.core.records import assemble
from pipeline.stages import sample as sample_mod
from pipeline.stages.sample import sample_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny(tiny_model):
    return tiny_model


def layouts_dataset(path, n_images=4, crowded=33):
    counts = [crowded] + [2] * (n_images - 1)
    owner = np.repeat(np.arange(n_images), counts)
    rng = np.random.default_rng(0)
    x0, y0 = rng.uniform(0, 0.5, len(owner)), rng.uniform(0, 0.5, len(owner))
    records = assemble(
        {
            "image_id": [f"t:{i}" for i in range(n_images)],
            "source": ["t"] * n_images,
            "file": [f"{i}.jpg" for i in range(n_images)],
            "width": [64] * n_images,
            "height": [48] * n_images,
            "captions": [["a dog"], [], ["two cats"], ["a car"]][:n_images],
            "split": ["val"] * n_images,
        },
        {
            "image_index": owner,
            "phrase": (["dog", "cat", "car"] * 20)[: len(owner)],
            "category": ["x"] * len(owner),
            "x0": x0,
            "y0": y0,
            "x1": x0 + 0.3,
            "y1": y0 + 0.4,
            "score": np.ones(len(owner)),
            "origin": ["coco"] * len(owner),
        },
    )
    write_dataset(
        path,
        records,
        None,
        stage="test",
        inputs=[],
        params={},
        images_in=n_images,
        boxes_in=len(owner),
        sources={"t": {"images_root": str(path)}},
    )
    return records


def test_sample_dataset_writes_images_and_layouts_and_resumes(tiny, tmp_path, monkeypatch):
    from PIL import Image

    records = layouts_dataset(tmp_path / "lay")
    kw = {"steps": 2, "guidance_scale": 1.0, "batch_size": 3, "seed": 4}
    full = sample_dataset(tiny, tmp_path / "lay", tmp_path / "full", **kw)
    c = full["counts"]
    assert (
        c["images_kept"] == 4
        and c["boxes_in"] == 39
        and c["boxes_rejected"] == {"over_max_boxes": 3}
    )
    ds = read_dataset(tmp_path / "full")
    assert ds.records.column("image_id").to_pylist() == records.column("image_id").to_pylist()
    got = ds.records.column("boxes").to_pylist()
    want = records.column("boxes").to_pylist()
    assert got[0] == want[0][:30] and got[1:] == want[1:]
    paths = [
        ds.image_path(s, f)
        for s, f in zip(ds.records["source"].to_pylist(), ds.records["file"].to_pylist())
    ]
    assert all(Image.open(p).size == (64, 64) for p in paths)  # the tiny model's own size

    calls = {"n": 0}
    real_write = sample_mod.write_png

    def dies_on_third(path, image):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # a kill halfway
        real_write(path, image)

    monkeypatch.setattr(sample_mod, "write_png", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        sample_dataset(tiny, tmp_path / "lay", tmp_path / "resumed", **kw)
    assert not (tmp_path / "resumed").exists()
    drawn = []
    real_generate = sample_mod.generate
    monkeypatch.setattr(sample_mod, "write_png", real_write)
    monkeypatch.setattr(
        sample_mod,
        "generate",
        lambda comps, caps, *a, **k: drawn.append(len(caps)) or real_generate(comps, caps, *a, **k),
    )
    sample_dataset(tiny, tmp_path / "lay", tmp_path / "resumed", **kw)
    assert sum(drawn) == 2  # only the images not yet drawn
    again = read_dataset(tmp_path / "resumed")
    for p in paths:
        q = again.image_path("t", p.name)
        assert np.abs(np.asarray(Image.open(p), int) - np.asarray(Image.open(q), int)).max() <= 1
    assert json.loads((tmp_path / "resumed" / "manifest.json").read_text())["params"]["beta"] == 0.3
    drawn.clear()
    sample_dataset(tiny, tmp_path / "lay", tmp_path / "resumed", **kw)
    assert drawn == []  # the same request again: the finished output is reused
    sample_dataset(tiny, tmp_path / "lay", tmp_path / "resumed", **{**kw, "limit": 1})
    assert sum(drawn) == 1  # another request draws afresh
    assert read_dataset(tmp_path / "resumed").records.num_rows == 1


def test_sample_dataset_edge_cases(tiny, tmp_path):

    layouts_dataset(tmp_path / "lay", n_images=2, crowded=0)
    empty = sample_dataset(tiny, tmp_path / "lay", tmp_path / "none", split="train", steps=1)
    assert empty["counts"]["images_in"] == 0 and (tmp_path / "none" / "images").is_dir()
    for bad in ({"beta": 1.5}, {"scheduler": "euler"}, {"adapters": tmp_path / "no.safetensors"}):
        with pytest.raises(UserError):
            sample_dataset(tiny, tmp_path / "lay", tmp_path / "bad", steps=1, **bad)
