import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.dataset import check_counts, read_dataset
from pipeline.core.errors import UserError
from pipeline.core.records import BOX_TYPE, PARENT_IMAGE_REJECTED
from pipeline.stages.curate import (
    BOX_TOO_SMALL,
    DUPLICATE_IMAGE,
    DUPLICATE_IMAGE_ID,
    OVER_MAX_BOXES,
    REASONS,
    curate,
    filter_boxes,
    split_of,
)
from tests.dataset_factory import make_dataset, random_dataset, write_jpeg


def reference_filter(boxes, min_area, max_boxes):
    """Plain per-box reading of GLIGEN's rule: drop small, keep the N largest."""
    area = [max(b["x1"] - b["x0"], 0) * max(b["y1"] - b["y0"], 0) for b in boxes]
    big = [i for i, a in enumerate(area) if a >= min_area]
    ranked = sorted(big, key=lambda i: (-area[i], i))
    kept = sorted(ranked[:max_boxes])
    reasons = {i: BOX_TOO_SMALL for i, a in enumerate(area) if a < min_area}
    reasons.update({i: OVER_MAX_BOXES for i in ranked[max_boxes:]})
    return kept, reasons


@pytest.mark.parametrize("seed,min_area,max_boxes", [(0, 0.01, 30), (1, 0.02, 5), (2, 0.0, 1)])
def test_filters_match_a_per_box_reference(tmp_path, seed, min_area, max_boxes):
    src = random_dataset(tmp_path / "in", "r", 60, seed)
    m = curate([src], tmp_path / "out", min_box_area=min_area, max_boxes=max_boxes)
    before = read_dataset(src).records.to_pylist()
    after = {r["image_id"]: r for r in read_dataset(tmp_path / "out").records.to_pylist()}
    rejects = read_dataset(tmp_path / "out").rejects.to_pylist()
    got_reasons = {(r["image_id"], r["box_index"]): r["reason"] for r in rejects}
    n_small = n_over = 0
    for rec in before:
        kept, reasons = reference_filter(rec["boxes"], min_area, max_boxes)
        assert after[rec["image_id"]]["boxes"] == [rec["boxes"][i] for i in kept]
        for i, why in reasons.items():
            assert got_reasons[(rec["image_id"], i)] == why
        n_small += sum(1 for w in reasons.values() if w == BOX_TOO_SMALL)
        n_over += sum(1 for w in reasons.values() if w == OVER_MAX_BOXES)
    counts = m["counts"]
    assert counts["boxes_rejected"].get(BOX_TOO_SMALL, 0) == n_small
    assert counts["boxes_rejected"].get(OVER_MAX_BOXES, 0) == n_over
    assert n_small + n_over > 0  # the case is not vacuous
    assert counts["images_in"] == counts["images_kept"] == 60
    check_counts(counts)


def test_duplicate_images_by_content_hash(tmp_path):
    root_a, root_b = tmp_path / "imgs_a", tmp_path / "imgs_b"
    write_jpeg(root_a / "x.jpg", 32, 24, seed=1)
    write_jpeg(root_a / "y.jpg", 32, 24, seed=2)
    root_b.mkdir()
    shutil.copy(root_a / "x.jpg", root_b / "renamed.jpg")
    write_jpeg(root_b / "y.jpg", 32, 24, seed=3)  # same name as in a, other pixels
    box = {"xyxy": (0.1, 0.1, 0.6, 0.6)}
    a = make_dataset(
        tmp_path / "a",
        "a",
        [{"id": 1, "file": "x.jpg"}, {"id": 2, "file": "y.jpg"}],
        [{"image": 0, **box}, {"image": 1, **box}],
        root_a,
    )
    b = make_dataset(
        tmp_path / "b",
        "b",
        [{"id": 1, "file": "renamed.jpg"}, {"id": 2, "file": "y.jpg"}],
        [{"image": 0, **box}, {"image": 0, **box}, {"image": 1, **box}],
        root_b,
    )
    m = curate([a, b], tmp_path / "out")
    ds = read_dataset(tmp_path / "out")
    assert sorted(ds.records.column("image_id").to_pylist()) == ["a:1", "a:2", "b:2"]
    assert m["counts"]["images_rejected"] == {DUPLICATE_IMAGE: 1}
    assert m["counts"]["boxes_rejected"] == {PARENT_IMAGE_REJECTED: 2}
    assert m["counts"]["images_in"] == 4 and m["counts"]["boxes_in"] == 5
    image_reject = next(r for r in ds.rejects.to_pylist() if r["kind"] == "image")
    assert image_reject["image_id"] == "b:1" and "a:1" in image_reject["detail"]
    assert set(m["sources"]) == {"a", "b"}


def test_duplicates_by_source_and_file_when_images_are_absent(tmp_path):
    imgs = [{"id": 1, "file": "x.jpg"}, {"id": 2, "file": "y.jpg"}]
    a = make_dataset(tmp_path / "a", "s", imgs, [{"image": 0, "xyxy": (0, 0, 0.5, 0.5)}])
    b = make_dataset(tmp_path / "b", "s", [{"id": 7, "file": "x.jpg"}], [])
    c = make_dataset(tmp_path / "c", "t", [{"id": 1, "file": "x.jpg"}], [])  # other source
    m = curate([a, b, c], tmp_path / "out")
    assert m["counts"]["images_rejected"] == {DUPLICATE_IMAGE: 1}
    kept = read_dataset(tmp_path / "out").records.column("image_id").to_pylist()
    assert kept == ["s:1", "s:2", "t:1"]


def test_repeated_image_id_with_other_content_is_rejected(tmp_path):
    a = make_dataset(tmp_path / "a", "s", [{"id": 1, "file": "x.jpg"}], [])
    b = make_dataset(
        tmp_path / "b",
        "s",
        [{"id": 1, "file": "other.jpg"}],
        [{"image": 0, "xyxy": (0, 0, 0.5, 0.5)}],
    )
    m = curate([a, b], tmp_path / "out")
    assert m["counts"]["images_rejected"] == {DUPLICATE_IMAGE_ID: 1}
    assert m["counts"]["boxes_rejected"] == {PARENT_IMAGE_REJECTED: 1}


def test_conflicting_images_roots_are_refused(tmp_path):
    a = make_dataset(tmp_path / "a", "s", [{"id": 1, "file": "x.jpg"}], [], tmp_path / "r1")
    b = make_dataset(tmp_path / "b", "s", [{"id": 2, "file": "y.jpg"}], [], tmp_path / "r2")
    with pytest.raises(UserError, match="two images roots"):
        curate([a, b], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    c = make_dataset(tmp_path / "c", "s", [{"id": 3, "file": "z.jpg"}], [])  # root unknown
    m = curate([c, a], tmp_path / "out")
    assert m["sources"]["s"]["images_root"] == str(tmp_path / "r1")


def test_split_is_deterministic_uniform_and_local(tmp_path):
    ids = [f"coco:{i}" for i in range(4000)]
    split = split_of(ids, 0.1)
    assert 0.085 < np.mean(split == "val") < 0.115
    assert (split_of(ids[::7], 0.1) == split[::7]).all()  # independent of the other images
    assert (split_of(ids, 0.1, seed=1) != split).any()
    assert (split_of(ids, 0.0) == "train").all() and (split_of(ids, 1.0) == "val").all()
    # Stable across machines: the documented formula, recomputed independently.
    key = (0).to_bytes(8, "little")
    u = [
        int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, key=key).digest(), "little")
        / 2**64
        for i in ids[:50]
    ]
    assert list(split_of(ids[:50], 0.3)) == ["val" if x < 0.3 else "train" for x in u]


def test_curated_split_written_and_reproducible(tmp_path):
    src = random_dataset(tmp_path / "in", "r", 200, 5, max_boxes_per_image=2)
    m1 = curate([src], tmp_path / "o1", val_fraction=0.3)
    m2 = curate([src], tmp_path / "o2", val_fraction=0.3)
    s1 = read_dataset(tmp_path / "o1").records.column("split").to_pylist()
    s2 = read_dataset(tmp_path / "o2").records.column("split").to_pylist()
    assert s1 == s2 and set(s1) == {"train", "val"}
    assert m1["splits"] == m2["splits"] == {"train": s1.count("train"), "val": s1.count("val")}
    assert m1["params"]["val_fraction"] == 0.3


def test_bad_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        curate([], tmp_path / "out")
    with pytest.raises(UserError):
        curate([tmp_path], tmp_path / "out")
    src = random_dataset(tmp_path / "in", "r", 3, 0)
    with pytest.raises(UserError):
        curate([src], tmp_path / "out", max_boxes=0)
    with pytest.raises(UserError):
        curate([src], tmp_path / "out", val_fraction=1.5)
    with pytest.raises(UserError):
        curate([src], src)


def test_cli_one_line_error_and_success(tmp_path):
    cmd = [sys.executable, "-m", "pipeline.cli", "curate"]
    bad = subprocess.run(
        cmd + [str(tmp_path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "not a groundset dataset" in bad.stderr
    src = random_dataset(tmp_path / "in", "r", 5, 0)
    ok = subprocess.run(
        cmd + [str(src), "--out", str(tmp_path / "o"), "--max-boxes", "3"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["stage"] == "curate" and manifest["params"]["max_boxes"] == 3


box_sides = st.sampled_from([0.0, 0.05, 0.1, 0.1, 0.2, 0.5, 1.0])  # many exact ties


@settings(max_examples=60, deadline=None)
@given(
    images=st.lists(st.lists(st.tuples(box_sides, box_sides), max_size=12), max_size=6),
    min_area=st.sampled_from([0.0, 0.01, 0.02, 0.1]),
    max_boxes=st.integers(1, 5),
)
def test_filter_boxes_property(images, min_area, max_boxes):
    """filter_boxes agrees with the per-box reference on any layout, ties included."""
    boxes = [
        [
            {
                "phrase": "p",
                "category": "c",
                "x0": 0.0,
                "y0": 0.0,
                "x1": w,
                "y1": h,
                "score": 1.0,
                "origin": "t",
            }
            for w, h in img
        ]
        for img in images
    ]
    arr = pa.array(boxes, pa.list_(BOX_TYPE))
    kept, code, parent, within = filter_boxes(arr, min_area, max_boxes)
    reasons = REASONS[code]
    for i, img in enumerate(arr.to_pylist()):
        want_kept, want_reasons = reference_filter(img, min_area, max_boxes)
        assert kept[i].as_py() == [img[k] for k in want_kept]
        mine = {int(w): r for p, w, r in zip(parent, within, reasons) if p == i and r}
        assert mine == want_reasons
