"""``groundset ingest yolo`` on a small ultralytics layout built here, with every fault.

Images are real (tiny) files written with PIL, so header sizes, EXIF rotation and
corrupt files go through the same code as real data.
"""

import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.cli import main
from pipeline.core.dataset import read_dataset
from pipeline.stages.ingest.yolo import default_source, ingest_yolo

NAMES = ["dog", "cat", "bird"]


def image(path, w, h, fmt="JPEG", orientation=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (w, h), (120, 30, 200))
    kw = {}
    if orientation:
        exif = Image.Exif()
        exif[274] = orientation
        kw["exif"] = exif
    im.save(path, fmt, **kw)


def label(root, rel, text):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text.encode() if isinstance(text, str) else text)


@pytest.fixture
def layout(tmp_path):
    img, lab = tmp_path / "data/images", tmp_path / "data/labels"
    image(img / "a.jpg", 64, 32)
    label(
        lab,
        "a.txt",
        "\ufeff0 0.5 0.5 0.5 0.5\r\n\r\n1 0.25 0.25 0.1 0.1\n"  # BOM, CRLF, blank
        "0 0.5 0.5 0.5 0.5\n"  # duplicate_box
        "0 0.5 0.5\n"  # bad_label_line (3 columns)
        "0 0.1 0.1 0.5 0.1 0.5 0.6\n"  # segment: box 0.1 0.1 0.5 0.6
        "0 0.1 0.1 0.5 0.1\n",
    )  # kept, clipped at the left edge
    image(img / "sub/b.png", 20, 10, "PNG")
    label(
        lab,
        "sub/b.txt",
        "2 0.9 0.9 0.4 0.4\n"  # clipped to 0.7..1.0
        "7 0.5 0.5 0.1 0.1\n"  # unknown_class
        "1.5 0.5 0.5 0.1 0.1\n"  # unknown_class (not an integer)
        "0 abc 0.5 0.1 0.1\n"  # non_numeric_coordinates
        "0 nan 0.5 0.1 0.1\n"  # non_numeric_coordinates
        "0 1.5 1.5 0.2 0.2\n"  # outside_image
        "0 0.5 0.5 0 0.2\n"  # zero_area
        "0 0.5 0.5 -0.1 0.2\n",
    )  # zero_area (negative width)
    image(img / "nolabel.jpg", 16, 16)  # kept, no boxes
    image(img / "rot.jpg", 40, 20, orientation=6)  # displayed as 20 x 40
    label(lab, "rot.txt", "1 0.5 0.5 1.0 1.0\n")
    image(img / "dup.jpg", 8, 8)
    image(img / "dup.png", 8, 8, "PNG")  # shared_label_file
    label(lab, "dup.txt", "0 0.5 0.5 0.5 0.5\n")
    (img / "broken.jpg").write_bytes(b"<html>not an image</html>")  # not_an_image
    label(lab, "broken.txt", "0 0.5 0.5 0.5 0.5\n1 0.2 0.2 0.1 0.1\n")  # parent_image_rejected
    (img / "empty.jpg").write_bytes(b"")  # empty_file
    label(lab, "orphan.txt", "0 0.5 0.5 0.5 0.5\n")  # pairs with no image: not a label file
    (img / "notes.txt").write_text("not an image, ignored")
    names = tmp_path / "data.yaml"
    names.write_text(yaml.safe_dump({"path": ".", "names": dict(enumerate(NAMES))}))
    return img, lab, names


def test_every_fault_has_its_reason_and_counts_add_up(layout, tmp_path):
    img, lab, names = layout
    m = ingest_yolo(img, lab, names, tmp_path / "out")
    c = m["counts"]
    assert c["images_rejected"] == {
        "empty_file": 1,
        "not_an_image": 1,
        "shared_label_file": 1,
    }
    assert c["boxes_rejected"] == {
        "bad_label_line": 1,
        "duplicate_box": 1,
        "non_numeric_coordinates": 2,
        "outside_image": 1,
        "parent_image_rejected": 2,
        "unknown_class": 2,
        "zero_area": 2,
    }
    assert c["images_in"] == 8 == c["images_kept"] + sum(c["images_rejected"].values())
    assert c["boxes_in"] == 18 == c["boxes_kept"] + sum(c["boxes_rejected"].values())
    ds = read_dataset(tmp_path / "out")
    recs = {r["file"]: r for r in ds.records.to_pylist()}
    assert sorted(recs) == ["a.jpg", "dup.jpg", "nolabel.jpg", "rot.jpg", "sub/b.png"]
    a = recs["a.jpg"]
    assert (a["width"], a["height"], a["image_id"]) == (64, 32, "data:a.jpg")
    assert [b["category"] for b in a["boxes"]] == ["dog", "cat", "dog", "dog"]
    # float32 storage of corners computed in float64 from the label text: 1e-7 ~ float32 ulp
    # at 1 (the same for the three checks below)
    np.testing.assert_allclose(
        [a["boxes"][3][k] for k in ("x0", "y0", "x1", "y1")], [0.0, 0.05, 0.35, 0.15], atol=1e-7
    )
    np.testing.assert_allclose(
        [a["boxes"][0][k] for k in ("x0", "y0", "x1", "y1")], [0.25, 0.25, 0.75, 0.75], atol=1e-7
    )
    np.testing.assert_allclose(
        [a["boxes"][2][k] for k in ("x0", "y0", "x1", "y1")], [0.1, 0.1, 0.5, 0.6], atol=1e-7
    )
    b = recs["sub/b.png"]
    assert [bb["category"] for bb in b["boxes"]] == ["bird"]
    np.testing.assert_allclose(
        [b["boxes"][0][k] for k in ("x0", "y0", "x1", "y1")], [0.7, 0.7, 1.0, 1.0], atol=1e-7
    )
    assert (recs["rot.jpg"]["width"], recs["rot.jpg"]["height"]) == (20, 40)  # EXIF 6: sideways
    assert recs["nolabel.jpg"]["boxes"] == []
    assert all(
        bb["origin"] == "yolo" and bb["score"] == 1.0 for r in recs.values() for bb in r["boxes"]
    )
    rej = ds.rejects.to_pylist()
    assert not [r for r in rej if r["file"] == "orphan.txt"]  # not read, so not a reject
    (split,) = m["sources"]["data"]["splits"]
    assert split["other_txt"] == 1 and split["other_txt_examples"] == ["orphan.txt"]
    assert set(ds.records.column("split").to_pylist()) == {""}  # no --data: no split
    lines = {(r["file"], r["box_index"]): r["reason"] for r in rej if r["kind"] == "box"}
    assert lines[("sub/b.png", 3)] == "non_numeric_coordinates"
    assert lines[("a.jpg", 2)] == "duplicate_box"
    assert lines[("broken.jpg", 1)] == "parent_image_rejected"
    src = m["sources"]["data"]
    assert src["images_root"] == str(img.resolve()) and src["format"] == "yolo"
    assert [c["name"] for c in src["categories"]] == NAMES


def test_names_as_a_list_and_the_default_source(layout, tmp_path):
    img, lab, _ = layout
    names = tmp_path / "list.yaml"
    names.write_text("names: [dog, cat, bird]\n")
    m = ingest_yolo(img, lab, names, tmp_path / "o", source="mine")
    assert "mine" in m["sources"]
    assert default_source(tmp_path / "x/images") == "x"
    assert default_source(tmp_path / "coco128/images/train2017") == "train2017"


def test_rerun_gives_identical_records(layout, tmp_path):
    img, lab, names = layout
    ingest_yolo(img, lab, names, tmp_path / "o")
    first = read_dataset(tmp_path / "o").records
    ingest_yolo(img, lab, names, tmp_path / "o")
    assert read_dataset(tmp_path / "o").records.equals(first)


@pytest.mark.parametrize(
    "case",
    [
        "names_missing",
        "names_no_key",
        "names_bad_yaml",
        "names_bad_entry",
        "images_not_dir",
        "labels_not_dir",
    ],
)
def test_option_errors_exit_2_with_one_line(case, layout, tmp_path, capsys, monkeypatch):
    img, lab, names = layout
    if case == "names_missing":
        names = tmp_path / "none.yaml"
    elif case == "names_no_key":
        names.write_text("nc: 3\n")
    elif case == "names_bad_yaml":
        names.write_text("names: [a, b\n")
    elif case == "names_bad_entry":
        names.write_text("names: {x: dog}\n")
    elif case == "images_not_dir":
        img = tmp_path / "nope"
    else:
        lab = tmp_path / "nope"
    argv = [
        "groundset",
        "--quiet",
        "ingest",
        "yolo",
        "--images",
        str(img),
        "--labels",
        str(lab),
        "--names",
        str(names),
        "--out",
        str(tmp_path / "o"),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("groundset: error: ")
    assert "Traceback" not in err and not (tmp_path / "o").exists()
