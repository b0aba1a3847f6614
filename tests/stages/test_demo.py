"""The demo world: deterministic bytes, real COCO layout, exact boxes, grid-like grid part."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline.core.dataset import read_dataset
from pipeline.core.errors import UserError
from pipeline.stages.demo.world import PARTS, caption_list, make_demo

SMALL = {"n_natural": 12, "n_unlabelled": 6, "n_grid": 10, "n_heldout": 4, "size": 48}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "world"
    make_demo(out, seed=3, **SMALL)
    return out


def _sums(root):
    return dict(line.split("  ")[::-1] for line in (root / "SHA256SUMS").read_text().splitlines())


def test_same_seed_gives_identical_bytes(demo, tmp_path):
    again = tmp_path / "again"
    make_demo(again, seed=3, **SMALL)
    assert _sums(again) == _sums(demo)
    # the recorded hashes are the files' real hashes
    import hashlib

    for rel, digest in _sums(again).items():
        assert hashlib.sha256((again / rel).read_bytes()).hexdigest() == digest


def test_other_seed_differs_and_parts_are_independent(demo, tmp_path):
    other = tmp_path / "other"
    make_demo(other, seed=4, **SMALL)
    a, b = _sums(demo), _sums(other)
    assert a.keys() == b.keys()
    assert sum(a[k] != b[k] for k in a) > len(a) // 2
    fewer = tmp_path / "fewer"
    make_demo(fewer, seed=3, **{**SMALL, "n_grid": 3})
    c = _sums(fewer)
    natural = [k for k in a if k.startswith("natural/")]
    assert natural and all(a[k] == c[k] for k in natural)


def test_layout_of_the_demo(demo):
    summary = json.loads((demo / "demo.json").read_text())
    assert set(summary["parts"]) == set(PARTS)
    for part in ("natural", "grid", "heldout"):
        assert len(list((demo / part / "images").glob("*.png"))) == SMALL[f"n_{part}"]
        assert (demo / part / "annotations" / f"captions_{part}.json").is_file()
    lines = (demo / "unlabelled" / "captions.jsonl").read_text().splitlines()
    assert len(lines) == SMALL["n_unlabelled"]
    assert {"file", "caption"} == set(json.loads(lines[0]))
    assert not (demo / "unlabelled" / "annotations").exists()  # truth is kept aside
    assert (demo / "unlabelled" / "truth" / "instances_unlabelled.json").is_file()


def test_coco_files_have_the_real_coco_layout(demo):
    from pycocotools.coco import COCO

    inst = json.loads((demo / "natural" / "annotations" / "instances_natural.json").read_text())
    assert set(inst) == {"info", "licenses", "images", "annotations", "categories"}
    assert set(inst["images"][0]) == {
        "license",
        "file_name",
        "coco_url",
        "height",
        "width",
        "date_captured",
        "flickr_url",
        "id",
    }
    ann = inst["annotations"][0]
    assert set(ann) == {"segmentation", "area", "iscrowd", "image_id", "bbox", "category_id", "id"}
    assert set(inst["categories"][0]) == {"supercategory", "id", "name"}
    coco = COCO(str(demo / "natural" / "annotations" / "instances_natural.json"))
    caps = COCO(str(demo / "natural" / "annotations" / "captions_natural.json"))
    assert len(coco.getImgIds()) == SMALL["n_natural"]
    assert all(len(caps.getAnnIds(imgIds=[i])) == 3 for i in coco.getImgIds())
    # polygon masks agree with the boxes: the mask's extent is the box
    for a in coco.loadAnns(coco.getAnnIds())[:20]:
        m = coco.annToMask(a)
        ys, xs = np.nonzero(m)
        x, y, w, h = a["bbox"]
        assert abs(xs.min() - x) <= 1.5 and abs(xs.max() + 1 - (x + w)) <= 1.5
        assert abs(ys.min() - y) <= 1.5 and abs(ys.max() + 1 - (y + h)) <= 1.5


def test_boxes_are_exact_in_the_pixels(demo):
    """Single-object images: the pixels that differ from the background span the box."""
    from pipeline.stages.demo.render import background

    inst = json.loads((demo / "natural" / "annotations" / "instances_natural.json").read_text())
    size = SMALL["size"]
    checked = 0
    for im in inst["images"]:
        anns = [a for a in inst["annotations"] if a["image_id"] == im["id"]]
        if len(anns) != 1:
            continue
        px = np.asarray(Image.open(demo / "natural" / "images" / im["file_name"]).convert("RGB"))
        x, y, w, h = anns[0]["bbox"]
        # the scene's grey level: a corner pixel far from the object, minus the light ramp
        cy, cx = (0, 0) if x + y > size / 2 else (size - 1, size - 1)
        bg0 = background([(0, 0, size, size, 0)], size)
        grey = int(px[cy, cx, 1]) - int(bg0[cy, cx, 1])
        bg = background([(0, 0, size, size, grey)], size).astype(int)
        fg = np.any(np.abs(px.astype(int) - bg) > 8, axis=2)
        ys, xs = np.nonzero(fg)
        assert abs(xs.min() - x) <= 1 and abs(xs.max() + 1 - (x + w)) <= 1
        assert abs(ys.min() - y) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1
        checked += 1
    assert checked >= 1


def test_light_ramp_encodes_position(demo):
    """Red rises left to right and blue top to bottom on every background."""
    px = np.asarray(Image.open(demo / "heldout" / "images" / "000000000001.png").convert("RGB"))
    assert (
        int(px[0, -1, 0]) - int(px[0, 0, 0]) >= 15 or int(px[-1, -1, 0]) - int(px[-1, 0, 0]) >= 15
    )
    assert (
        int(px[-1, 0, 2]) - int(px[0, 0, 2]) >= 15 or int(px[-1, -1, 2]) - int(px[0, -1, 2]) >= 15
    )


def test_coco_parts_ingest_cleanly(demo, tmp_path):
    for part in ("natural", "grid"):
        ann = demo / part / "annotations"
        out = tmp_path / part
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "--quiet",
                "ingest",
                "coco",
                "--instances",
                str(ann / f"instances_{part}.json"),
                "--captions",
                str(ann / f"captions_{part}.json"),
                "--images-root",
                str(demo / part / "images"),
                "--source",
                f"demo-{part}",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        ds = read_dataset(out)
        inst = json.loads((ann / f"instances_{part}.json").read_text())
        c = ds.manifest["counts"]
        assert c["images_kept"] == len(inst["images"]) and not c["images_rejected"]
        assert c["boxes_kept"] == len(inst["annotations"]) and not c["boxes_rejected"]
        rec = ds.records.to_pylist()
        first = next(r for r in rec if r["file"] == inst["images"][0]["file_name"])
        assert first["captions"] and first["boxes"][0]["phrase"] in caption_list_phrases()
        for r_ in rec:
            assert ds.image_path(f"demo-{part}", r_["file"]).is_file()


def caption_list_phrases():
    from pipeline.stages.demo.render import VOCABULARY

    return {name for name, _ in VOCABULARY}


def test_caption_lists_count_objects():
    assert caption_list([0, 1, 1, 3]) == "a red circle, two blue squares and a yellow star"
    assert caption_list([2]) == "a green triangle"


def _boxes_by_image(inst):
    by = {}
    for a in inst["annotations"]:
        by.setdefault(a["image_id"], []).append(a["bbox"])
    return [np.array(by.get(im["id"], [])) for im in inst["images"]]


def test_grid_part_is_grid_like(demo):
    """Lattice images (even indices) put centres on <= 3 rows and columns; mosaic images
    (odd) never let a box cross a tile seam; natural images do neither."""
    size = SMALL["size"]
    inst = json.loads((demo / "grid" / "annotations" / "instances_grid.json").read_text())
    for i, b in enumerate(_boxes_by_image(inst)):
        cx, cy = b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2
        if i % 2 == 0:  # lattice: centres snap to a few lines (jitter < 10% of a cell)
            for c in (cx, cy):
                groups = 1 + np.sum(np.diff(np.sort(c)) > 0.1 * size)
                assert groups <= 3
            assert np.ptp(b[:, 2]) < 1e-6  # one object size per lattice
        else:  # mosaic: some k in {2,3} such that no box crosses a seam
            ok = False
            for k in (2, 3):
                seams = np.arange(1, k) * size / k
                crosses = (b[:, None, 0] < seams - 0.01) & (
                    b[:, None, 0] + b[:, None, 2] > seams + 0.01
                )
                crosses |= (b[:, None, 1] < seams - 0.01) & (
                    b[:, None, 1] + b[:, None, 3] > seams + 0.01
                )
                ok |= not crosses.any()
            assert ok


def test_grid_part_scores_higher_than_natural(demo):
    """The audit's own per-image score separates the parts (it is what the gate uses)."""
    layout = pytest.importorskip("analysis.layout_stats")
    means = {}
    for part in ("natural", "grid"):
        inst = json.loads((demo / part / "annotations" / f"instances_{part}.json").read_text())
        boxes = _boxes_by_image(inst)
        offsets = np.concatenate([[0], np.cumsum([len(b) for b in boxes])])
        b = np.vstack([x for x in boxes if len(x)]) / SMALL["size"]
        r = layout.grid_scores_from_arrays(
            offsets, b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
        )
        means[part] = float(np.mean(r["grid_score"]))
    assert means["grid"] > means["natural"] + 0.3


def test_bad_sizes_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        make_demo(tmp_path / "x", seed=0, **{**SMALL, "n_grid": -1})
    with pytest.raises(UserError):
        make_demo(tmp_path / "x", seed=0, **{**SMALL, "size": 4})
    assert not (tmp_path / "x").exists()
