"""``groundset ingest yolo --data data.yaml``: an ultralytics/Roboflow dataset as ultralytics
reads it (split folders, labels by the ``/images/`` -> ``/labels/`` rule, names), each
split kept as the records' ``split``.
"""

import os
from collections import Counter
from pathlib import Path, PurePosixPath

import pytest
import yaml

from pipeline.core.dataset import read_dataset
from pipeline.stages.ingest.yolo import ingest_yolo_data
from pipeline.stages.ingest.yolo_labels import labels_dir_for
from tests.stages.ingest.yolo_trees import (
    NAMES,
    SPLITS,
    label_lines,
    roboflow_tree,
    run_cli,
    write_image,
)


def stem_id(image_id: str, source: str) -> str:
    """An image id without its source and suffix: the key ``lines_per_image`` uses."""
    return PurePosixPath(image_id.removeprefix(f"{source}:")).with_suffix("").as_posix()


def lines_per_image(root: Path) -> dict[str, int]:
    """``<split>/images/<stem>`` -> non-blank lines of its label file, read as text."""
    out = {}
    for split in SPLITS:
        for f in (root / split / "labels").glob("*.txt"):
            n = sum(1 for line in f.read_text().splitlines() if line.strip())
            out[f"{split}/images/{f.stem}"] = n
    return out


@pytest.mark.parametrize("names_as_list", [True, False])
def test_roboflow_export_reads_every_split_and_every_label_line(tmp_path, names_as_list):
    root = roboflow_tree(tmp_path / "vehicles", names_as_list=names_as_list)
    m = ingest_yolo_data(root / "data.yaml", tmp_path / "out")
    c = m["counts"]
    assert c["images_in"] == c["images_kept"] == sum(SPLITS.values()) == 20
    assert c["boxes_in"] == c["boxes_kept"] == label_lines(root) == 27
    assert c["images_rejected"] == {} and c["boxes_rejected"] == {}
    src = m["sources"]["vehicles"]  # default source: the dataset root's folder name
    assert [x["name"] for x in src["categories"]] == NAMES
    assert [(s["split"], s["images_dir"], s["labels_dir"]) for s in src["splits"]] == [
        ("train", "train/images", "train/labels"),
        ("val", "valid/images", "valid/labels"),
        ("test", "test/images", "test/labels"),
    ]
    assert all(s["other_txt"] == 0 for s in src["splits"])  # the READMEs are not looked at

    recs = read_dataset(tmp_path / "out").records.to_pylist()
    assert Counter(r["split"] for r in recs) == {"train": 12, "val": 5, "test": 3}
    want = lines_per_image(root)
    got = {stem_id(r["image_id"], "vehicles"): len(r["boxes"]) for r in recs}
    assert got == want
    r0 = next(r for r in recs if r["file"] == "train/images/train_001_jpg.rf.00000001.jpg")
    assert (r0["width"], r0["height"], r0["split"]) == (33, 24, "train")
    assert [b["category"] for b in r0["boxes"]] == ["truck"]


def test_cli_data_form_prints_the_splits(tmp_path, monkeypatch, capsys):
    root = roboflow_tree(tmp_path / "rf")
    code, out, err = run_cli(
        monkeypatch, capsys, "--data", root / "data.yaml", "--out", tmp_path / "o"
    )
    assert code == 0, err
    assert "20/20 images, 27/27 boxes kept" in out
    assert "train 12 images (train/images), val 5 images (valid/images)" in out


def test_path_key_lists_of_folders_and_a_folder_listed_twice(tmp_path):
    """``path`` relative to the yaml's folder; a list of folders is one split; the same
    folder as train and val (ultralytics' coco128.yaml) is read once, under train."""
    root = roboflow_tree(tmp_path / "ds")
    cfg = tmp_path / "cfg" / "my.yaml"
    cfg.parent.mkdir()
    cfg.write_text(
        yaml.safe_dump(
            {
                "path": "../ds",
                "train": ["train/images", "test/images"],
                "val": "train/images",
                "names": dict(enumerate(NAMES)),
            }
        )
    )
    m = ingest_yolo_data(cfg, tmp_path / "o", source="mine")
    assert m["counts"]["images_in"] == m["counts"]["images_kept"] == 15
    assert m["counts"]["boxes_kept"] == label_lines(root, "train") + label_lines(root, "test")
    recs = read_dataset(tmp_path / "o").records
    assert set(recs.column("split").to_pylist()) == {"train"}
    assert [s["images_dir"] for s in m["sources"]["mine"]["splits"]] == [
        "train/images",
        "test/images",
    ]


def test_labels_beside_the_images_when_the_path_has_no_images_folder(tmp_path):
    """ultralytics' rule without an ``images`` component: the label sits next to the image,
    and a README there is not a label file."""
    d = tmp_path / "flat"
    write_image(d / "a.jpg", 10, 10)
    (d / "a.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (d / "README.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # label-shaped, but no image README.*
    (tmp_path / "d.yaml").write_text("train: flat\nval: flat\nnames: [x, y]\n")
    m = ingest_yolo_data(tmp_path / "d.yaml", tmp_path / "o")
    assert m["counts"]["boxes_in"] == 1 == m["counts"]["boxes_kept"]
    assert m["sources"][tmp_path.name]["splits"][0]["other_txt_examples"] == ["README.txt"]


def test_folder_rule_matches_ultralytics_img2label_paths():
    utils = pytest.importorskip("ultralytics.data.utils")
    for folder in [
        "/d/coco128/images/train2017",
        "/d/rf/train/images",
        "/d/images/proj/images/val",
        "/d/flat",
        "/images",
    ]:
        (want,) = utils.img2label_paths([f"{folder}/x.jpg"])
        assert str(labels_dir_for(Path(folder)) / "x.txt") == want


def test_ultralytics_coco128_layout_from_shared_data(shared_data, tmp_path):
    """coco128 rebuilt in ultralytics' own layout (images/ and labels/ side by side, hard
    links to the shared files): boxes_in equals the label lines ultralytics would read."""
    src = shared_data / "coco128"
    if not (src / "images" / "train2017").is_dir():
        pytest.skip("coco128 is not in ../shared/data")
    root = tmp_path / "coco128"
    for split in ("train2017", "val2017"):
        for kind, frm in (("images", src / "images"), ("labels", src / "object_detection/labels")):
            (root / kind / split).mkdir(parents=True)
            for f in (frm / split).iterdir():
                try:
                    os.link(f, root / kind / split / f.name)
                except OSError:  # another filesystem: copy
                    (root / kind / split / f.name).write_bytes(f.read_bytes())
    names = yaml.safe_load((src / "object_detection/config.yaml").read_text())["names"]
    doc = {"path": ".", "train": "images/train2017", "val": "images/val2017", "names": names}
    (root / "coco128.yaml").write_text(yaml.safe_dump(doc))

    m = ingest_yolo_data(root / "coco128.yaml", tmp_path / "out")
    # ultralytics' pairing: each image's label path by img2label_paths, if that file exists
    want = {}
    for split in ("train2017", "val2017"):
        for img in (root / "images" / split).glob("*.jpg"):
            lab = Path(str(img).replace("/images/", "/labels/")).with_suffix(".txt")
            text = lab.read_text() if lab.is_file() else ""
            want[f"images/{split}/{img.stem}"] = sum(1 for x in text.splitlines() if x.strip())
    c = m["counts"]
    assert c["images_in"] == c["images_kept"] == 256
    assert c["boxes_in"] == sum(want.values()) == 929 + 898
    assert c["boxes_in"] == c["boxes_kept"] + sum(c["boxes_rejected"].values())
    recs = read_dataset(tmp_path / "out").records.to_pylist()
    assert Counter(r["split"] for r in recs) == {"train": 128, "val": 128}
    per_image = Counter(stem_id(r["image_id"], "coco128") for r in recs for _ in r["boxes"])
    rejected = Counter(
        stem_id(r["image_id"], "coco128")
        for r in read_dataset(tmp_path / "out").rejects.to_pylist()
        if r["kind"] == "box"
    )
    assert {k: v for k, v in (per_image + rejected).items()} == {k: v for k, v in want.items() if v}
    train = m["sources"]["coco128"]["splits"][0]
    assert train["other_txt_examples"] == ["000000000656.txt", "000000000659.txt"]


@pytest.mark.parametrize(
    "case",
    [
        "both_forms",
        "neither_form",
        "txt_image_list",
        "missing_split_folder",
        "missing_labels_folder",
        "no_split",
        "bad_path",
        "bad_split_value",
        "out_is_the_dataset",
    ],
)
def test_data_errors_exit_2_with_one_line(case, tmp_path, monkeypatch, capsys):
    root = roboflow_tree(tmp_path / "rf")
    data = root / "data.yaml"
    doc = yaml.safe_load(data.read_text())
    out = tmp_path / "o"
    extra = []
    if case == "both_forms":
        extra = ["--images", root / "train/images"]
    elif case == "txt_image_list":
        (root / "train.txt").write_text("./train/images/a.jpg\n")
        doc["train"] = "train.txt"
    elif case == "missing_split_folder":
        doc["val"] = "nope/images"
    elif case == "missing_labels_folder":
        (root / "valid/labels").rename(root / "valid/labelz")
    elif case == "no_split":
        doc = {"names": NAMES}
    elif case == "bad_path":
        doc["path"] = 3
    elif case == "bad_split_value":
        doc["train"] = {"a": 1}
    elif case == "out_is_the_dataset":
        out = root
    data.write_text(yaml.safe_dump(doc))
    args = ["--out", out] + ([] if case == "neither_form" else ["--data", data]) + extra
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("groundset: error: "), err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()
    if case == "txt_image_list":
        assert "image lists (.txt) are not supported" in err
    if case == "missing_labels_folder":
        assert "no labels folder" in err and "valid/labels" in err
