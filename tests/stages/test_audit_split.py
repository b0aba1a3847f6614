"""`groundset audit --remediate split` (#12 item 5): collages of known photos are cut back
into those photos: the manifest's accounting, the tiles' boxes and their pixels."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from analysis.calibration import Layouts, synthetic_natural, to_records
from pipeline.core.dataset import n_boxes, read_dataset, write_dataset
from pipeline.stages.audit import run_audit
from pipeline.stages.audit_split import BOX_TOO_SMALL, SPLIT, tile_source

W, H = 80, 60  # photo pixels; a 2x2 collage is 160 x 120, so tiles are whole pixels


def _draw(boxes, size, seed):
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(im)
    w, h = size
    for x0, y0, x1, y1 in boxes:
        d.rectangle(
            [x0 * w, y0 * h, x1 * w, y1 * h], fill=tuple(int(v) for v in rng.integers(0, 255, 3))
        )
    return im


def _photos(n, seed):
    lay = synthetic_natural(600, seed)
    out = []
    for k in range(lay.n_images):
        a, b = lay.offsets[k], lay.offsets[k + 1]
        if 3 <= b - a <= 8:
            out.append(np.column_stack([lay.x0[a:b], lay.y0[a:b], lay.x1[a:b], lay.y1[a:b]]))
    return out[:n]


def _layouts(boxes_list, kind):
    counts = [len(b) for b in boxes_list]
    allb = np.concatenate(boxes_list)
    return Layouts(np.r_[0, np.cumsum(counts)], *allb.T, np.full(len(boxes_list), kind))


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("split")
    root = d / "images"
    root.mkdir()
    natural = _photos(60, 1)
    photos = _photos(48, 2)  # 12 collages of 4
    collages, images = [], []
    for c in range(12):
        four = photos[4 * c : 4 * c + 4]
        canvas = Image.new("RGB", (2 * W, 2 * H))
        parts = []
        for t, p in enumerate(four):
            ox, oy = t % 2, t // 2
            canvas.paste(_draw(p, (W, H), 100 * c + t), (ox * W, oy * H))
            parts.append(p / 2 + np.array([ox, oy, ox, oy]) / 2)
        collages.append(np.concatenate(parts))
        images.append(canvas)
    rec = to_records(_layouts(natural + collages, "x"), "web")
    # sizes and files as drawn: natural photos 80x60, collages 160x120, PNG (lossless)
    sizes = [(W, H)] * len(natural) + [(2 * W, 2 * H)] * len(collages)
    for k, b in enumerate(natural):
        _draw(b, (W, H), k).save(root / f"{k}.png")
    for c, im in enumerate(images):
        im.save(root / f"{len(natural) + c}.png")
    rec = rec.set_column(
        rec.schema.get_field_index("file"),
        "file",
        pa.array([f"{k}.png" for k in range(rec.num_rows)]),
    )
    rec = rec.set_column(
        rec.schema.get_field_index("width"), "width", pa.array([s[0] for s in sizes], pa.int32())
    )
    rec = rec.set_column(
        rec.schema.get_field_index("height"), "height", pa.array([s[1] for s in sizes], pa.int32())
    )
    ds = d / "ds"
    write_dataset(ds, rec, None, stage="test", inputs=[], params={}, images_in=rec.num_rows,
                  boxes_in=n_boxes(rec), sources={"web": {"images_root": str(root)}})  # fmt: skip
    ref = d / "ref"
    ref_rec = to_records(synthetic_natural(300, 45), "reference")
    write_dataset(ref, ref_rec, None, stage="test", inputs=[], params={},
                  images_in=ref_rec.num_rows, boxes_in=n_boxes(ref_rec))  # fmt: skip
    result = run_audit(
        ds, d / "audit", reference=ref, remediate="split", remediated_out=d / "fixed"
    )
    return d, result, photos, len(natural)


def test_counts_add_up_with_the_tiles_as_added_images(split_run):
    d, result, _, n_natural = split_run
    assert result["final_verdict"] == "pass"
    c = json.loads((d / "fixed" / "manifest.json").read_text())["counts"]
    assert c["images_in"] == n_natural + 12
    n_split = c["images_rejected"].get(SPLIT, 0)
    assert n_split >= 6  # most collages are judged grid-like and split
    added = c["images_added"][SPLIT]
    assert added <= 4 * n_split  # a tile left without boxes is not a record
    assert c["images_in"] + added == c["images_kept"] + sum(c["images_rejected"].values())
    assert c["boxes_in"] == c["boxes_kept"] + sum(c["boxes_rejected"].values())
    assert set(c["boxes_rejected"]) <= {BOX_TOO_SMALL, "parent_image_rejected"}
    assert result["remediation"]["counts"] == c


def test_a_split_tile_holds_its_photos_boxes_and_pixels(split_run):
    d, _, photos, n_natural = split_run
    fixed = read_dataset(d / "fixed")  # validated on read, counts included
    rej = pq.read_table(d / "fixed" / "rejects.parquet").to_pylist()
    split_ids = [r["image_id"] for r in rej if r["reason"] == SPLIT]
    rows = {r["image_id"]: r for r in fixed.records.to_pylist()}
    root = fixed.sources[tile_source("web")]["images_root"]
    for r in (r for r in rej if r["reason"] == SPLIT):
        made = sum(f"{r['image_id']}#tile{t}" in rows for t in range(4))
        assert r["detail"] == f"{made} tiles"
    for sid in split_ids:
        c = int(sid.split(":")[1]) - n_natural
        for t in range(4):
            want = photos[4 * c + t]
            big = (want[:, 2] - want[:, 0]) * (want[:, 3] - want[:, 1]) >= 0.01
            if f"{sid}#tile{t}" not in rows:  # a tile is a record only if a box is left
                assert not big.any()
                continue
            tile = rows[f"{sid}#tile{t}"]
            assert tile["source"] == tile_source("web") and (tile["width"], tile["height"]) == (
                W,
                H,
            )
            got = np.array([[b["x0"], b["y0"], b["x1"], b["y1"]] for b in tile["boxes"]])
            want = want[big]
            # stored as float32 twice (collage, tile) with one x2 rescale: 1e-6 of the image
            assert np.allclose(np.sort(got, 0), np.sort(want, 0), atol=1e-6)
            pixels = np.asarray(Image.open(f"{root}/{tile['file']}"))
            photo = _draw(photos[4 * c + t], (W, H), 100 * c + t)
            assert np.array_equal(pixels, np.asarray(photo))
    assert not set(split_ids) & set(rows)  # the composites themselves are gone
