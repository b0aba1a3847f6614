"""The harm sweep's mixing step: deterministic, nested across shares, counts that add up."""

import hashlib
import json

import numpy as np
import pytest

from pipeline.core.dataset import read_dataset
from pipeline.core.errors import UserError
from pipeline.core.images import read_rgb
from pipeline.stages.contaminate import MOSAIC_SOURCE, contaminate, split_counts
from pipeline.stages.demo.world import make_demo
from pipeline.stages.ingest.coco import ingest_coco

SIZE = 10


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A small demo world's natural and grid parts, ingested as the pipeline does."""
    root = tmp_path_factory.mktemp("contaminate")
    make_demo(root / "demo", n_natural=14, n_unlabelled=0, n_grid=8, n_heldout=0, size=32, seed=1)
    out = {}
    for part in ("natural", "grid"):
        ann = root / "demo" / part / "annotations"
        out[part] = root / part
        ingest_coco(
            ann / f"instances_{part}.json",
            out[part],
            captions=ann / f"captions_{part}.json",
            images_root=root / "demo" / part / "images",
            source=f"demo-{part}",
        )
    return out


def _arm(parts, out, share, **kw):
    return contaminate(parts["natural"], parts["grid"], out, share=share, size=SIZE, **kw)


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != ".groundset-output":
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_split_counts_add_up_for_every_share():
    for size in (1, 7, 10, 400):
        for share in np.linspace(0, 1, 21):
            for frac in (0.0, 0.3, 0.5, 1.0):
                c = split_counts(size, float(share), frac)
                assert sum(c.values()) == size and min(c.values()) >= 0
                assert c["grid"] + c["mosaic"] == round(share * size)


def test_same_inputs_give_identical_bytes(parts, tmp_path):
    _arm(parts, tmp_path / "a", 0.6)
    _arm(parts, tmp_path / "b", 0.6)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    _arm(parts, tmp_path / "c", 0.6, seed=1)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_manifest_counts_add_up(parts, tmp_path):
    m = _arm(parts, tmp_path / "arm", 0.6)
    mix, counts = m["mix"], m["counts"]
    assert mix["natural"] + mix["grid"] + mix["mosaic"] == SIZE == counts["images_kept"]
    assert (mix["natural"], mix["grid"], mix["mosaic"]) == (4, 3, 3)
    assert counts["images_in"] == counts["images_kept"] and counts["images_rejected"] == {}
    ds = read_dataset(tmp_path / "arm")
    src = ds.records.column("source").to_pylist()
    assert src.count("demo-natural") == 4 and src.count("demo-grid") == 3
    assert src.count(MOSAIC_SOURCE) == 3
    assert (
        counts["boxes_in"]
        == counts["boxes_kept"]
        == sum(len(b) for b in ds.records.column("boxes").to_pylist())
    )
    on_disk = json.loads((tmp_path / "arm" / "manifest.json").read_text())
    assert on_disk["mix"] == mix and on_disk["params"]["share"] == 0.6


def test_arms_are_nested(parts, tmp_path):
    """Raising the share only swaps natural images for grid-like ones, never reshuffles."""
    ids = {}
    for share in (0.0, 0.3, 0.6, 1.0):
        _arm(parts, tmp_path / f"s{share}", share)
        ds = read_dataset(tmp_path / f"s{share}")
        ids[share] = ds.records.column("image_id").to_pylist()
    kinds = {
        s: {k: {i for i in v if i.split(":")[0] == k} for k in ("demo-natural", "demo-grid")}
        for s, v in ids.items()
    }
    for lo, hi in ((0.0, 0.3), (0.3, 0.6), (0.6, 1.0)):
        assert kinds[hi]["demo-natural"] <= kinds[lo]["demo-natural"]
        assert kinds[lo]["demo-grid"] <= kinds[hi]["demo-grid"]
    # mosaic i is the same picture in every arm that holds it
    a = read_rgb(tmp_path / "s0.6" / "images" / "000001.png")
    b = read_rgb(tmp_path / "s1.0" / "images" / "000001.png")
    assert np.array_equal(a, b)


def test_mosaics_keep_their_tiles_boxes_in_the_frame(parts, tmp_path):
    _arm(parts, tmp_path / "m", 1.0, mosaic_fraction=1.0, mosaic_tiles=(2,))
    ds = read_dataset(tmp_path / "m")
    assert set(ds.records.column("source").to_pylist()) == {MOSAIC_SOURCE}
    for rec in ds.records.to_pylist():
        assert rec["captions"][0].startswith("a 2x2 collage")
        img = read_rgb(ds.image_path(rec["source"], rec["file"]))
        assert img.shape == (32, 32, 3)
        for b in rec["boxes"]:
            assert 0 <= b["x0"] < b["x1"] <= 1 and 0 <= b["y0"] < b["y1"] <= 1
            assert b["origin"].endswith("+mosaic")
            # a box never straddles a seam: each lies inside one tile
            # (a box may end on the seam; 1e-6 is far below float32's step near 0.5)
            assert int(b["x0"] * 2) == int((b["x1"] - 1e-6) * 2)
            assert int(b["y0"] * 2) == int((b["y1"] - 1e-6) * 2)


def test_bad_requests_are_one_line_errors(parts, tmp_path):
    with pytest.raises(UserError, match="--share"):
        _arm(parts, tmp_path / "x", 1.5)
    with pytest.raises(UserError, match="grid-source images"):
        contaminate(
            parts["natural"], parts["grid"], tmp_path / "y", share=1.0, size=14, mosaic_fraction=0.0
        )
    with pytest.raises(UserError, match="natural images"):
        contaminate(parts["natural"], parts["grid"], tmp_path / "z", share=0.0, size=99)
    with pytest.raises(UserError, match="--mosaic-tiles"):
        _arm(parts, tmp_path / "w", 0.5, mosaic_tiles=(1,))
    with pytest.raises(UserError, match="--mosaic-fraction"):
        _arm(parts, tmp_path / "v", 0.5, mosaic_fraction=2.0)
