"""``groundset ingest coco`` on small COCO files built here: the contract of a good ingest.

(Faulty input is covered in test_ingest_malformed.py, real files in test_ingest_real.py.)
"""

import json
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cli import main
from pipeline.core.dataset import read_dataset
from pipeline.core.errors import UserError
from pipeline.core.records import RECORD_SCHEMA, assemble
from pipeline.stages.ingest.coco import default_source, ingest_coco

CATS = [{"id": 18, "name": "dog", "supercategory": "animal"}, {"id": 3, "name": "car"}]


def make(tmp_path, name="instances_val2017.json", n_images=6, seed=0):
    rng = np.random.default_rng(seed)
    images = [
        {
            "id": 100 + i,
            "file_name": f"{100 + i:012d}.jpg",
            "width": int(rng.integers(50, 700)),
            "height": int(rng.integers(50, 700)),
            "license": i % 3 + 1,
            "coco_url": "http://x",
        }
        for i in range(n_images)
    ]
    anns = []
    for k in range(40):
        im = images[int(rng.integers(0, n_images - 1))]  # the last image gets no boxes
        x, y = rng.uniform(0, im["width"] * 0.8), rng.uniform(0, im["height"] * 0.8)
        anns.append(
            {
                "id": 5000 + k,
                "image_id": im["id"],
                "category_id": CATS[k % 2]["id"],
                "bbox": [x, y, rng.uniform(1, 100), rng.uniform(1, 100)],
                "iscrowd": 0,
                "area": 1.0,
                "segmentation": [[x, y, x + 1, y, x + 1, y + 1]],
            }
        )
    doc = {
        "info": {"year": 2017},
        "licenses": [{"id": 1, "name": "CC", "url": "u"}],
        "images": images,
        "annotations": anns,
        "categories": CATS,
    }
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path, doc


def test_boxes_are_normalised_clipped_xyxy_in_file_order(tmp_path):
    path, doc = make(tmp_path)
    m = ingest_coco(path, tmp_path / "d")
    ds = read_dataset(tmp_path / "d")
    assert ds.records.schema == RECORD_SCHEMA
    assert m["counts"]["images_kept"] == 6 and m["counts"]["boxes_kept"] == 40
    assert m["stage"] == "ingest-coco" and m["inputs"][0]["sha256"]
    images = {im["id"]: im for im in doc["images"]}
    recs = {r["image_id"]: r for r in ds.records.to_pylist()}
    assert list(recs) == [f"coco-val2017:{i}" for i in images]  # file order, default source
    for iid, im in images.items():
        r = recs[f"coco-val2017:{iid}"]
        assert (r["file"], r["width"], r["height"], r["license"]) == (
            im["file_name"],
            im["width"],
            im["height"],
            str(im["license"]),
        )
        assert r["source"] == "coco-val2017" and r["captions"] == [] and r["split"] == ""
        want = [a for a in doc["annotations"] if a["image_id"] == iid]
        assert len(r["boxes"]) == len(want)
        W, H = im["width"], im["height"]
        for b, a in zip(r["boxes"], want):
            x, y, w, h = a["bbox"]
            exp = np.array([x / W, y / H, min(x + w, W) / W, min(y + h, H) / H], np.float32)
            np.testing.assert_array_equal([b["x0"], b["y0"], b["x1"], b["y1"]], exp)
            name = "dog" if a["category_id"] == 18 else "car"
            assert (b["phrase"], b["category"], b["score"], b["origin"]) == (
                name,
                name,
                1.0,
                "coco",
            )
    assert recs["coco-val2017:105"]["boxes"] == []
    src = m["sources"]["coco-val2017"]
    assert src["images_root"] is None
    assert src["categories"] == [
        {"id": 3, "name": "car", "supercategory": None},
        {"id": 18, "name": "dog", "supercategory": "animal"},
    ]
    assert src["licenses"] == [{"id": 1, "name": "CC", "url": "u"}]


@pytest.mark.parametrize(
    "stem,want",
    [
        ("instances_val2017", "coco-val2017"),
        ("instances_train2017_first128", "coco-train2017_first128"),
        ("my_boxes", "my_boxes"),
        ("instances_", "instances_"),
    ],
)
def test_default_source_rule(stem, want):
    assert default_source(f"/x/{stem}.json") == want


def test_cli_matches_the_python_stage_and_reruns_replace_output(tmp_path, capsys, monkeypatch):
    path, _ = make(tmp_path)
    root = tmp_path / "imgs"
    root.mkdir()
    for im in json.loads(path.read_text())["images"]:  # ingest checks that each file exists
        (root / im["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        (root / im["file_name"]).write_bytes(b"")
    ingest_coco(path, tmp_path / "py", images_root=root, source="s")
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "groundset",
            "--quiet",
            "ingest",
            "coco",
            "--instances",
            str(path),
            "--images-root",
            str(root),
            "--source",
            "s",
            "--out",
            str(tmp_path / "cli"),
        ],
    )
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 0
    assert "6/6 images, 40/40 boxes kept" in capsys.readouterr().out
    py, cli = read_dataset(tmp_path / "py"), read_dataset(tmp_path / "cli")
    assert py.records.equals(cli.records)
    assert cli.sources["s"]["images_root"] == str(root.resolve())
    # a second run over a smaller file replaces the dataset whole: no stale parts, no leftovers
    small, _ = make(tmp_path, "small.json", n_images=2, seed=1)
    ingest_coco(small, tmp_path / "py", source="s")
    assert read_dataset(tmp_path / "py").records.num_rows == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_captions_are_joined_by_image_id_in_file_order(tmp_path):
    path, doc = make(tmp_path)
    caps = {
        "info": {},
        "licenses": [],
        "type": "captions",
        "images": doc["images"],
        "annotations": [
            {"image_id": 101, "id": 1, "caption": "second image, first"},
            {"image_id": 100, "id": 2, "caption": "A dog runs.\n"},
            {"image_id": 101, "id": 3, "caption": "second image, second"},
        ],
    }
    (tmp_path / "captions.json").write_text(json.dumps(caps))
    m = ingest_coco(path, tmp_path / "d", captions=tmp_path / "captions.json")
    recs = read_dataset(tmp_path / "d").records.to_pylist()
    assert recs[0]["captions"] == ["A dog runs."]
    assert recs[1]["captions"] == ["second image, first", "second image, second"]
    assert all(r["captions"] == [] for r in recs[2:])
    assert m["captions"]["captions_joined"] == 3 and len(m["inputs"]) == 2


def test_images_only_file_without_annotations_key(tmp_path):
    """COCO test-set files (image_info) have no annotations: every image kept, no boxes."""
    (tmp_path / "info.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 3}],
                "categories": CATS,
            }
        )
    )
    m = ingest_coco(tmp_path / "info.json", tmp_path / "d", source="t")
    assert m["counts"]["images_kept"] == 1 and m["counts"]["boxes_in"] == 0


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda n: st.tuples(st.just(n), st.lists(st.integers(0, n - 1), max_size=25))
    )
)
def test_assemble_groups_boxes_by_image_keeping_their_order(case):
    """``assemble`` (the last step of both ingests) against a plain Python grouping, for
    owners in any order (the take path) and already grouped (the presorted path)."""
    n, owners = case
    for owner in (owners, sorted(owners)):
        k = len(owner)
        boxes = {
            "image_index": owner,
            "phrase": [f"p{i}" for i in range(k)],
            "category": [f"c{i}" for i in range(k)],
            "x0": np.full(k, 0.1),
            "y0": np.full(k, 0.2),
            "x1": np.linspace(0.3, 0.9, k),
            "y1": np.full(k, 0.9),
            "score": np.ones(k),
            "origin": ["t"] * k,
        }
        images = {
            "image_id": [f"s:{i}" for i in range(n)],
            "source": ["s"] * n,
            "file": [f"{i}.jpg" for i in range(n)],
            "width": [10] * n,
            "height": [10] * n,
        }
        rows = assemble(images, boxes).to_pylist()
        assert [r["image_id"] for r in rows] == images["image_id"]
        for i, r in enumerate(rows):
            assert [b["phrase"] for b in r["boxes"]] == [f"p{j}" for j in range(k) if owner[j] == i]
            assert r["captions"] == [] and r["license"] == "" and r["split"] == ""
    bad = {
        "image_index": [n],
        "phrase": ["x"],
        "category": ["x"],
        "x0": [0.1],
        "y0": [0.1],
        "x1": [0.2],
        "y1": [0.2],
        "score": [1.0],
        "origin": ["t"],
    }
    with pytest.raises(ValueError):  # a box owned by no image is a caller bug, never dropped
        assemble(images, bad)


def test_missing_image_files_are_rejected_at_ingest(tmp_path):
    path, _ = make(tmp_path)
    files = [im["file_name"] for im in json.loads(path.read_text())["images"]]
    root = tmp_path / "imgs"
    root.mkdir()
    for name in files[:4]:  # two of six files are absent
        (root / name).write_bytes(b"")
    m = ingest_coco(path, tmp_path / "out", images_root=root, source="s")
    c = m["counts"]
    assert c["images_kept"] == 4 and c["images_rejected"] == {"image_missing": 2}
    assert c["boxes_in"] == c["boxes_kept"] + sum(c["boxes_rejected"].values())
    kept = set(read_dataset(tmp_path / "out").records.column("file").to_pylist())
    assert kept == set(files[:4])


def test_a_captions_file_that_matches_no_image_is_an_error(tmp_path):
    path, _ = make(tmp_path)
    # an instances file given as --captions: it holds no caption of these images
    with pytest.raises(UserError, match="has no caption for any of the 6 images"):
        ingest_coco(path, tmp_path / "out", captions=path, source="s")
    assert not (tmp_path / "out").exists()
