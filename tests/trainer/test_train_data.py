"""Records to training tensors: padding, crop/flip box arithmetic, buckets, batch order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.core.dataset import read_dataset
from pipeline.core.errors import UserError
from pipeline.core.records import assemble
from tests.train_fixtures import make_dataset
from trainer.buckets import BatchOrder, assign_buckets, make_buckets
from trainer.data import Augment, ImageBatches, batches, read_weights
from trainer.layout import cover_crop, crop_boxes, flip_boxes, layouts_from_records


def _records(n_boxes_per_image, seed=0):
    rng = np.random.default_rng(seed)
    n = len(n_boxes_per_image)
    owner = np.repeat(np.arange(n), n_boxes_per_image)
    x0, y0 = rng.uniform(0, 0.5, (2, owner.size))
    x1, y1 = x0 + rng.uniform(0.01, 0.5, owner.size), y0 + rng.uniform(0.01, 0.5, owner.size)
    images = {
        "image_id": [f"s:{i}" for i in range(n)],
        "source": ["s"] * n,
        "file": [f"{i}.png" for i in range(n)],
        "width": [64] * n,
        "height": [48] * n,
        "captions": [["c"]] * n,
    }
    phrases = np.array(["cat", "dog", "bus"])[rng.integers(0, 3, owner.size)]
    boxes = {
        "phrase": phrases,
        "category": phrases,
        "x0": x0,
        "y0": y0,
        "x1": x1,
        "y1": y1,
        "score": np.ones(owner.size),
        "origin": ["t"] * owner.size,
        "image_index": owner,
    }
    return assemble(images, boxes)


def test_layouts_keep_the_largest_boxes_padded_and_masked():
    records = _records([0, 3, 40])
    L = layouts_from_records(records, max_boxes=30)
    assert L.boxes.shape == (3, 30, 4) and L.mask.sum(1).tolist() == [0, 3, 30]
    flat = records.column("boxes").to_pylist()
    for i, boxes in enumerate(flat):
        areas = sorted(((b["x1"] - b["x0"]) * (b["y1"] - b["y0"]) for b in boxes), reverse=True)[
            :30
        ]
        got = L.boxes[i][L.mask[i]]
        got_area = (got[:, 2] - got[:, 0]) * (got[:, 3] - got[:, 1])
        # float32 layouts against float64 areas of the same float32 corners: products of float32
        # differences, ~1e-7 relative; 1e-5 cannot confuse a box with another
        np.testing.assert_allclose(got_area, areas, rtol=1e-5)
        names = {(round(b["x0"], 5), b["phrase"]) for b in boxes}
        for bx, pid in zip(got, L.phrase_ids[i][L.mask[i]]):
            assert (round(float(bx[0]), 5), L.phrases[pid]) in names
    assert (L.phrase_ids[~L.mask] == -1).all() and (L.boxes[~L.mask] == 0).all()


def test_crop_moves_clips_and_drops_small_boxes():
    boxes = np.array(
        [[[0.0, 0.0, 0.5, 1.0], [0.9, 0.0, 1.0, 1.0], [0.45, 0.25, 0.55, 0.75]]], np.float32
    )
    mask = np.ones((1, 3), bool)
    # image 200x100 resized to cover a 100x100 bucket stays 200x100; crop the middle 100 px
    out, keep = crop_boxes(boxes, mask, 200, 100, 50, 0, 100, 100, min_area=0.01)
    # float32 crop arithmetic (shift and divide by the crop size): float32 rounding, ~6e-8
    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, 0.5, 1.0], atol=1e-6)  # 50..100 px -> 0..0.5
    assert not keep[0, 1] and (out[0, 1] == 0).all()  # 180..200 px lies outside the crop
    np.testing.assert_allclose(out[0, 2], [0.4, 0.25, 0.6, 0.75], atol=1e-6)
    # the same middle box falls under a larger minimum area and is dropped
    _, keep = crop_boxes(boxes, mask, 200, 100, 50, 0, 100, 100, min_area=0.2)
    assert keep[0].tolist() == [True, False, False]


def test_cover_crop_covers_the_bucket_and_stays_inside():
    rng = np.random.default_rng(0)
    w, h = rng.integers(20, 400, 200), rng.integers(20, 400, 200)
    rw, rh, left, top = cover_crop(w, h, 64, 48, rng)
    assert (rw >= 64).all() and (rh >= 48).all()
    assert (
        (left >= 0).all()
        and (top >= 0).all()
        and (left + 64 <= rw).all()
        and (top + 48 <= rh).all()
    )
    assert ((rw == 64) | (rh == 48)).all()  # scaled to cover exactly on one side
    # integer resized sizes: rounding each side (>= 48 px) by <= 0.5 px moves the ratio by <= 2%
    np.testing.assert_allclose(rw / rh, w / h, rtol=0.05)


def test_flip_mirrors_boxes_and_is_an_involution():
    boxes = np.array([[[0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0]]], np.float32)
    mask = np.array([[True, False]])
    f = flip_boxes(boxes, mask, [True])
    # float32 1 - x: one rounding (~6e-8); flipping twice is two
    np.testing.assert_allclose(f[0, 0], [0.7, 0.2, 0.9, 0.4], atol=1e-6)
    assert (f[0, 1] == 0).all()
    np.testing.assert_allclose(flip_boxes(f, mask, [True]), boxes, atol=1e-6)
    np.testing.assert_array_equal(flip_boxes(boxes, mask, [False]), boxes)


def test_buckets_have_equal_area_and_images_go_to_nearest_ratio():
    b = make_buckets(512, 64)
    area = b[:, 0] * b[:, 1]
    assert (area <= 512 * 512).all() and (area >= 0.75 * 512 * 512).all()
    assert [512, 512] in b.tolist() and (b % 64 == 0).all()
    got = assign_buckets([1024, 512, 640], [512, 1024, 480], b)
    ratios = b[got, 0] / b[got, 1]
    assert ratios[0] > 1.5 and ratios[1] < 0.67 and 1.0 < ratios[2] < 1.6


def test_batch_order_is_reproducible_single_bucket_and_covers_epoch():
    bucket_of = np.array([0, 1, 0, 2, 1, 0, 0, 1, 2, 2, 0])
    a, b = BatchOrder(bucket_of, 3, seed=5), BatchOrder(bucket_of, 3, seed=5)
    seq = [a.batch(k) for k in range(40)]
    assert all(np.array_equal(x, b.batch(k)) for k, x in enumerate(seq))
    assert all(len(set(bucket_of[x])) == 1 for x in seq)
    # a fresh order asked for a late batch first (a resumed run) gives the same batch
    assert np.array_equal(BatchOrder(bucket_of, 3, seed=5).batch(37), seq[37])
    first_epoch = np.concatenate(a.epoch(0))
    assert sorted(first_epoch.tolist()) == list(range(bucket_of.size))
    assert not np.array_equal(
        np.concatenate(BatchOrder(bucket_of, 3, seed=6).epoch(0)), first_epoch
    )


def test_weighted_order_draws_in_proportion(tmp_path):
    w = np.array([1.0, 1.0, 0.0, 4.0])
    order = BatchOrder(np.zeros(4, int), 2, seed=0, weights=w)
    seen = np.bincount(np.concatenate([order.batch(k) for k in range(2000)]), minlength=4)
    assert seen[2] == 0
    assert 3.3 < seen[3] / seen[0] < 4.8
    # weights read from an image_id -> weight table; unnamed images keep weight 1
    pq.write_table(pa.table({"image_id": ["b", "c"], "weight": [0.5, 0.0]}), tmp_path / "w.parquet")
    np.testing.assert_array_equal(
        read_weights(tmp_path / "w.parquet", ["a", "b", "c"]), [1, 0.5, 0]
    )
    pq.write_table(pa.table({"id": ["b"]}), tmp_path / "bad.parquet")
    with pytest.raises(UserError, match="image_id and weight"):
        read_weights(tmp_path / "bad.parquet", ["a"])


def test_drops_follow_their_probabilities():
    aug = Augment(caption_drop=0.5, grounding_drop=0.1)
    rng = np.random.default_rng(0)
    boxes, mask = np.full((4000, 2, 4), 0.5, np.float32), np.ones((4000, 2), bool)
    out = aug(boxes, mask, np.full(4000, 2), rng)
    assert 0.45 < out["caption_dropped"].mean() < 0.55
    assert 0.08 < (~out["mask"].any(1)).mean() < 0.12
    assert (out["boxes"][~out["mask"]] == 0).all()
    with pytest.raises(UserError):
        Augment(caption_drop=1.5)


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from trainer.model import load_components

    return load_components(tiny_model, gated=False)


@pytest.mark.parametrize("flip_p", [0.0, 1.0])
def test_image_batches_tensors(tmp_path, tiny, flip_p):
    from tests.train_fixtures import COLORS

    ds = read_dataset(make_dataset(tmp_path, boxes_per=1))
    src = ImageBatches(
        ds,
        tiny.tokenizer,
        resolution=32,
        multiple=4,
        augment=Augment(caption_drop=0.0, grounding_drop=0.0, flip_p=flip_p),
    )
    order = BatchOrder(src.bucket_of, 2, seed=0)
    it = batches(src, order, seed=0)
    for _ in range(4):
        b = next(it)
        n, _, h, w = b["pixels"].shape
        bw, bh = src.buckets[src.bucket_of[order.batch(b["index"])[0]]]
        assert (w, h) == (bw, bh) and w * h <= 32 * 32
        assert b["pixels"].min() >= -1 and b["pixels"].max() <= 1 and b["pixels"].min() < -0.5
        assert b["input_ids"].shape == (n, tiny.tokenizer.model_max_length)
        assert b["boxes"].shape == (n, 30, 4) and b["masks"].shape == (n, 30)
        assert b["flip"].tolist() == [bool(flip_p)] * n
        m = b["masks"].bool()
        assert (b["boxes"][m] >= 0).all() and (b["boxes"][m] <= 1).all()
        assert ((b["phrase_index"] >= 0) == m).all()
        assert b["original_size"].shape == (n, 2) and b["crop_top_left"].shape == (n, 2)
        # the pixel at each kept box's centre has the colour its phrase names, so the
        # crop, resize and flip moved boxes and pixels together
        for j, k in zip(*np.nonzero(m.numpy())):
            x0, y0, x1, y1 = b["boxes"][j, k].numpy() * [w, h, w, h]
            rgb = (b["pixels"][j, :, int((y0 + y1) / 2), int((x0 + x1) / 2)].numpy() + 1) * 127.5
            assert np.abs(rgb - COLORS[b["phrases"][b["phrase_index"][j, k]]]).max() < 40


def test_image_batches_are_deterministic_per_index(tmp_path, tiny):
    ds = read_dataset(make_dataset(tmp_path))
    src = ImageBatches(ds, tiny.tokenizer, resolution=32, multiple=4)
    order = BatchOrder(src.bucket_of, 2, seed=3)
    a = [next(it) for it in [batches(src, order, seed=3, start=0)] for _ in range(5)][-1]
    b = next(batches(src, BatchOrder(src.bucket_of, 2, seed=3), seed=3, start=4))
    assert a["index"] == b["index"] == 4
    for k in ("pixels", "boxes", "masks", "input_ids", "crop_top_left"):
        assert (a[k] == b[k]).all()


def test_missing_images_root_is_a_user_error(tmp_path, tiny):
    ds = read_dataset(make_dataset(tmp_path))
    ds.manifest["sources"] = {}
    with pytest.raises(UserError, match="images_root"):
        ImageBatches(ds, tiny.tokenizer, resolution=32, multiple=4)


def test_worker_processes_give_the_same_batches(tmp_path, tiny):
    ds = read_dataset(make_dataset(tmp_path))
    src = ImageBatches(ds, tiny.tokenizer, resolution=32, multiple=4)
    order = BatchOrder(src.bucket_of, 2, seed=1)
    inline, worker = (
        batches(src, order, seed=1, start=3),
        batches(src, order, seed=1, start=3, workers=1),
    )
    for _ in range(3):
        a, b = next(inline), next(worker)
        assert a["index"] == b["index"] and a["image_ids"] == b["image_ids"]
        assert torch.equal(a["pixels"], b["pixels"]) and torch.equal(a["boxes"], b["boxes"])


def test_exif_rotated_photos_are_read_as_displayed(tmp_path, tiny):
    """Records' boxes are drawn on the displayed photo; a sideways-stored one must be rotated."""
    from PIL import Image

    from tests.train_fixtures import COLORS

    ds = read_dataset(make_dataset(tmp_path, sizes=((48, 32),), boxes_per=1))
    path = ds.image_path("synth", "img000.png")
    shown = Image.open(path).convert("RGB")
    exif = Image.Exif()
    exif[274] = 6  # "rotate 90 degrees clockwise to display"
    shown.rotate(90, expand=True).save(path, exif=exif)  # stored sideways, 32x48
    src = ImageBatches(
        ds,
        tiny.tokenizer,
        resolution=32,
        multiple=4,
        augment=Augment(0.0, 0.0, 0.0),
        random_crop=False,
    )
    b = src(np.array([0]), np.random.default_rng(0))
    _, _, h, w = b["pixels"].shape
    assert w > h  # displayed landscape, as the record says
    x0, y0, x1, y1 = b["boxes"][0, 0].numpy() * [w, h, w, h]
    rgb = (b["pixels"][0, :, int((y0 + y1) / 2), int((x0 + x1) / 2)].numpy() + 1) * 127.5
    assert np.abs(rgb - COLORS[b["phrases"][0]]).max() < 40
