"""``ingest yolo`` loses nothing silently and reads nothing it should not.

- only a ``.txt`` whose stem pairs with an image is a label file (a README is not);
- a run that keeps nothing of a non-empty input exits 2 with the reason, writing nothing;
- a label file that is a symlink out of the labels root is rejected unread;
- a label file that cannot be read is rejected with a reason (no traceback, no hang).

Tests run as root, where a mode of 000 still reads, so "permission denied" is made by
failing ``os.open`` for that one path; a FIFO, a folder named ``x.txt`` and a dangling link
fail for real.
"""

import errno
import os
import signal

import pytest
import yaml

from pipeline.core.dataset import read_dataset
from pipeline.stages.ingest.yolo import ingest_yolo
from tests.stages.ingest.yolo_trees import NAMES, label_lines, roboflow_tree, run_cli, write_image

SECRET = "0 0.5 0.5 0.2 0.2 secret-outside-the-root"


def assert_identities(c):
    assert c["images_in"] == c["images_kept"] + sum(c["images_rejected"].values())
    assert c["boxes_in"] == c["boxes_kept"] + sum(c["boxes_rejected"].values())


@pytest.fixture
def pair(tmp_path):
    """images/{a,b,c}.jpg with labels/{a,b,c}.txt (1, 2, 1 lines) and a names yaml."""
    img, lab = tmp_path / "images", tmp_path / "labels"
    for stem, text in (
        ("a", "0 0.5 0.5 0.2 0.2\n"),
        ("b", "1 0.3 0.3 0.1 0.1\n2 0.6 0.6 0.2 0.2\n"),
    ):
        write_image(img / f"{stem}.jpg", 20, 10)
        lab.mkdir(exist_ok=True)
        (lab / f"{stem}.txt").write_text(text)
    write_image(img / "c.jpg", 20, 10)
    (lab / "c.txt").write_text("1 0.5 0.5 0.4 0.4\n")
    names = tmp_path / "names.yaml"
    names.write_text(yaml.safe_dump({"names": NAMES}))
    return img, lab, names


def test_dataset_root_as_images_and_labels_exits_2_naming_the_cause(tmp_path, monkeypatch, capsys):
    """Before: exit 0, "0/36 boxes kept" (the 9 README lines read as labels, every
    label file an orphan). Now: the READMEs are not label files, and nothing pairs."""
    root = roboflow_tree(tmp_path / "rf")
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        *("--images", root, "--labels", root, "--names", root / "data.yaml"),
        *("--out", tmp_path / "o"),
    )
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"0 of {label_lines(root)} boxes kept: no label file matches an image stem" in err
    assert f"is {root} the labels folder of the images in {root}?" in err
    assert not (tmp_path / "o").exists()


def test_a_readme_in_the_labels_folder_is_not_a_label_file(pair, tmp_path):
    img, lab, names = pair
    (lab / "README.roboflow.txt").write_text("0 0.5 0.5 0.2 0.2\nexported via roboflow.com\n")
    (lab / "classes.txt").write_text("car\ntruck\nperson\n")
    m = ingest_yolo(img, lab, names, tmp_path / "o", source="s")
    c = m["counts"]
    assert c["boxes_in"] == 4 == c["boxes_kept"] and c["images_in"] == 3 == c["images_kept"]
    (split,) = m["sources"]["s"]["splits"]
    assert split["label_files_read"] == 3 and split["other_txt"] == 2
    assert read_dataset(tmp_path / "o").rejects.num_rows == 0


def test_all_boxes_rejected_exits_2_with_the_reasons(pair, tmp_path, monkeypatch, capsys):
    img, lab, _ = pair
    names = tmp_path / "wrong.yaml"
    names.write_text("names: {5: car}\n")  # no class 0, 1 or 2
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        *("--images", img, "--labels", lab, "--names", names, "--out", tmp_path / "o"),
    )
    assert code == 2 and "0 of 4 boxes kept (unknown_class 4)" in err, err
    assert not (tmp_path / "o").exists()


def test_no_image_kept_exits_2(tmp_path, monkeypatch, capsys):
    img, lab = tmp_path / "images", tmp_path / "labels"
    img.mkdir()
    lab.mkdir()
    (img / "a.jpg").write_bytes(b"<html>")
    (img / "b.png").write_bytes(b"")
    (tmp_path / "n.yaml").write_text("names: [x]\n")
    args = ("--images", img, "--labels", lab, "--names", tmp_path / "n.yaml")
    code, _, err = run_cli(monkeypatch, capsys, *args, "--out", tmp_path / "o")
    assert code == 2 and "0 of 2 images kept (empty_file 1, not_an_image 1)" in err, err
    (img / "a.jpg").unlink()
    (img / "b.png").unlink()
    code, _, err = run_cli(monkeypatch, capsys, *args, "--out", tmp_path / "o")
    assert code == 2 and f"no images under {img}" in err, err
    assert not (tmp_path / "o").exists()


def test_background_images_alone_are_fine(tmp_path):
    """Images without label files and no label-shaped .txt: a background set, kept."""
    write_image(tmp_path / "images/a.jpg", 8, 8)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/README.txt").write_text("no objects in these pictures\n")
    (tmp_path / "n.yaml").write_text("names: [x]\n")
    m = ingest_yolo(tmp_path / "images", tmp_path / "labels", tmp_path / "n.yaml", tmp_path / "o")
    assert m["counts"]["images_kept"] == 1 and m["counts"]["boxes_in"] == 0


def test_symlinks_out_of_the_labels_root_are_rejected_unread(pair, tmp_path):
    img, lab, names = pair
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "a.txt").write_text(SECRET + "\n")
    (lab / "a.txt").unlink()
    (lab / "a.txt").symlink_to(outside / "a.txt")  # file link out
    write_image(img / "sub/d.jpg", 20, 10)
    (lab / "sub").symlink_to(outside)  # folder link out: labels/sub/d.txt
    (outside / "d.txt").write_text(SECRET + "\n")
    (lab / ".store").mkdir()
    (lab / ".store/c.data").write_text("2 0.5 0.5 0.4 0.4\n")
    (lab / "c.txt").unlink()
    (lab / "c.txt").symlink_to(".store/c.data")  # a link inside the root is fine
    m = ingest_yolo(img, lab, names, tmp_path / "o", source="s")
    c = m["counts"]
    assert c["images_rejected"] == {"symlink_outside_root": 2}
    assert c["boxes_in"] == 3 == c["boxes_kept"]  # b (2 lines) and c through its link
    assert_identities(c)
    ds = read_dataset(tmp_path / "o")
    rej = {r["file"]: r for r in ds.rejects.to_pylist()}
    assert set(rej) == {"a.jpg", "sub/d.jpg"}
    assert all("secret" not in (r["detail"] or "") for r in rej.values())
    assert "points outside the labels root" in rej["a.jpg"]["detail"]
    recs = {r["file"]: r for r in ds.records.to_pylist()}
    assert [b["category"] for b in recs["c.jpg"]["boxes"]] == ["person"]


def _deny(monkeypatch, path):
    """``os.open`` of ``path`` fails as it does for a user without read permission."""
    real = os.open

    def fake(p, flags, *a, **k):
        if os.fspath(p) == os.fspath(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(p))
        return real(p, flags, *a, **k)

    monkeypatch.setattr(os, "open", fake)


class Hung(Exception):
    """Not an OSError, which the stage would turn into a reject and hide the hang."""


def _hung(*_):
    raise Hung("ingest hung on a label file")


@pytest.mark.parametrize("kind", ["permission", "fifo", "folder", "dangling"])
def test_unreadable_label_file_rejects_its_image_with_a_reason(kind, pair, tmp_path, monkeypatch):
    img, lab, names = pair
    target = lab / "b.txt"
    target.unlink()
    if kind == "permission":
        target.write_text("1 0.3 0.3 0.1 0.1\n")
        target.chmod(0)
        _deny(monkeypatch, target)  # root reads mode 000 anyway
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    else:
        target.symlink_to("gone.txt")
    before = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(60)  # a FIFO opened blocking would hang here: fail instead
    try:
        m = ingest_yolo(img, lab, names, tmp_path / "o", source="s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    c = m["counts"]
    assert c["images_rejected"] == {"unreadable_file": 1} and c["images_kept"] == 2
    assert c["boxes_in"] == 2 == c["boxes_kept"]  # a and c; b's lines were never read
    assert_identities(c)
    (row,) = read_dataset(tmp_path / "o").rejects.to_pylist()
    assert (row["file"], row["reason"]) == ("b.jpg", "unreadable_file")
    assert "label file" in row["detail"]
    assert m["sources"]["s"]["splits"][0]["label_files_rejected"] == 1


def test_unreadable_label_of_a_rejected_image_keeps_the_first_reason(pair, tmp_path):
    img, lab, names = pair
    (img / "b.jpg").write_bytes(b"")
    (lab / "b.txt").unlink()
    (lab / "b.txt").mkdir()
    m = ingest_yolo(img, lab, names, tmp_path / "o", source="s")
    assert m["counts"]["images_rejected"] == {"empty_file": 1}
    assert_identities(m["counts"])
