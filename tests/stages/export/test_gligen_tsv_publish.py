"""GLIGEN TSV: one split per file with honest counts, and a .tsv/.lineidx pair that a kill
can never leave mismatched."""

import json
import os
import subprocess
import sys

import pytest

from pipeline.core.errors import UserError
from pipeline.stages.export import export
from pipeline.stages.export.gligen_tsv import export_gligen_tsv, lineidx_path
from tests.dataset_factory import make_dataset, write_jpeg
from tests.stages.export.gligen_reader import generate_lineidx, read_rows


@pytest.fixture
def split_dataset(tmp_path):
    """6 images: 0-3 train (3 has no file), 4-5 val; image i has i + 1 boxes."""
    root = tmp_path / "imgs"
    imgs = []
    for i in range(6):
        if i != 3:
            write_jpeg(root / f"{i}.jpg", 16, 16, seed=i)
        split = "val" if i >= 4 else ("train" if i % 2 else "")  # "" (uncurated) is train
        imgs.append({"id": i, "file": f"{i}.jpg", "width": 16, "height": 16, "split": split})
    boxes = [
        {"image": i, "xyxy": (0.1, 0.1, 0.5, 0.5), "phrase": "dog"}
        for i in range(6)
        for _ in range(i + 1)
    ]
    return make_dataset(tmp_path / "d", "s", imgs, boxes, root)


def _keys(path):
    return [key for key, _ in read_rows(path)]


def test_split_selects_images_and_counts_only_written_boxes(
    tmp_path, split_dataset, capsys, monkeypatch
):
    monkeypatch.delenv("GROUNDSET_QUIET", raising=False)  # the summary line is the subject
    path = export_gligen_tsv(split_dataset, tmp_path / "train.tsv")  # default: train
    assert _keys(path) == ["s:0", "s:1", "s:2"]  # s:3 has no file
    out = capsys.readouterr().out
    assert "3 train images, 6 boxes (6 with a span in the caption); 1 skipped" in out
    path = export_gligen_tsv(split_dataset, tmp_path / "val.tsv", split="val")
    assert _keys(path) == ["s:4", "s:5"]
    assert "2 val images, 11 boxes" in capsys.readouterr().out
    path = export_gligen_tsv(split_dataset, tmp_path / "all.tsv", split="all")
    assert _keys(path) == ["s:0", "s:1", "s:2", "s:4", "s:5"]
    assert "5 all images, 17 boxes" in capsys.readouterr().out
    with pytest.raises(UserError, match="unknown split 'test'"):
        export_gligen_tsv(split_dataset, tmp_path / "x.tsv", split="test")


def test_streaming_by_part_writes_the_same_bytes(tmp_path, split_dataset, monkeypatch):
    """The same dataset in 2-row parts gives the same TSV and .lineidx, byte for byte
    (annotation ids run on across parts; the index offsets continue)."""
    from pipeline.core import dataset as ds_mod
    from pipeline.core.dataset import read_dataset, write_dataset

    one = export_gligen_tsv(split_dataset, tmp_path / "one.tsv", split="all")
    monkeypatch.setattr(ds_mod, "ROWS_PER_PART", 2)
    d = read_dataset(split_dataset)
    n = d.records.num_rows
    boxes = ds_mod.n_boxes(d.records)
    small = tmp_path / "small"
    write_dataset(
        small,
        d.records,
        None,
        stage="t",
        inputs=[],
        params={},
        images_in=n,
        boxes_in=boxes,
        sources=d.sources,
    )
    assert len(json.loads((small / "manifest.json").read_text())["parts"]) == 3
    parts = export_gligen_tsv(small, tmp_path / "parts.tsv", split="all")
    assert parts.read_bytes() == one.read_bytes()
    assert lineidx_path(parts).read_bytes() == lineidx_path(one).read_bytes()


def test_split_option_is_gligen_tsv_only_and_an_empty_split_is_an_error(tmp_path):
    make_dataset(tmp_path / "d", "s", [{"id": 1, "file": "a.jpg"}], [], tmp_path / "imgs")
    with pytest.raises(UserError, match="--split only applies to gligen-tsv"):
        export("yolo", tmp_path / "d", tmp_path / "y", split="val")
    with pytest.raises(UserError, match="has no val images .* --split all"):
        export("gligen-tsv", tmp_path / "d", tmp_path / "v.tsv", split="val")
    assert not (tmp_path / "v.tsv").exists()
    with pytest.raises(UserError, match="its own .lineidx"):
        export_gligen_tsv(tmp_path / "d", tmp_path / "x.lineidx")


def test_cli_split(tmp_path, split_dataset):
    cmd = [sys.executable, "-m", "pipeline.cli", "export", "gligen-tsv", str(split_dataset)]
    env = {k: v for k, v in os.environ.items() if k != "GROUNDSET_QUIET"}
    ok = subprocess.run(
        [*cmd, "--out", str(tmp_path / "v.tsv"), "--split", "val"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert "2 val images, 11 boxes" in ok.stdout
    bad = subprocess.run(
        [*cmd, "--out", str(tmp_path / "b.tsv"), "--split", "dev"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown split" in bad.stderr


def _state(path):
    """'pair' (the .lineidx is exactly the TSV's line offsets), 'tsv-alone' or 'none'."""
    idx = lineidx_path(path)
    if not path.exists():
        assert not idx.exists(), "a .lineidx without its .tsv"
        return "none"
    if not idx.exists():
        return "tsv-alone"
    fresh = path.with_name("check.lineidx")
    generate_lineidx(str(path), str(fresh))  # GLIGEN's own index of this TSV
    assert idx.read_text() == fresh.read_text(), "a .tsv with another file's .lineidx"
    fresh.unlink()
    return "pair"


class Killed(BaseException):  # not an Exception: nothing may catch it, as with SIGKILL
    pass


@pytest.mark.parametrize("fail_at", [1, 2])
def test_kill_between_renames_never_leaves_a_mismatched_pair(
    tmp_path, split_dataset, monkeypatch, fail_at
):
    """The export publishes in three steps: drop the old .lineidx, rename the TSV, rename
    its .lineidx. A kill before rename ``fail_at`` leaves the old TSV alone (1) or the new
    TSV alone (2): never a TSV beside another run's index. GLIGEN's TSVFile refuses a lone
    TSV, or rebuilds its index on request; a rerun writes the pair."""
    out = tmp_path / "g" / "train.tsv"
    export_gligen_tsv(split_dataset, out, split="val")  # the old pair: 2 rows
    assert _state(out) == "pair" and len(_keys(out)) == 2
    old_tsv = out.read_bytes()

    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == fail_at:
            raise Killed
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Killed):
        export_gligen_tsv(split_dataset, out, split="all")  # the new one: 5 rows
    monkeypatch.setattr(os, "replace", real_replace)
    assert [os.path.basename(c) for c in calls] == ["train.tsv", "train.lineidx"][:fail_at]
    assert _state(out) == "tsv-alone"
    assert (out.read_bytes() == old_tsv) == (fail_at == 1)
    with pytest.raises(FileNotFoundError, match="train.lineidx"):
        read_rows(out)  # GLIGEN's TSVDataset: TSVFile(path) finds no index
    want = 2 if fail_at == 1 else 5
    assert len(read_rows(out, if_generate_lineidx=True)) == want  # rebuilt on request
    lineidx_path(out).unlink()

    # a real kill also leaves the temp files behind; the rerun clears them
    (out.parent / ".train.lineidx.tmp-dead.lineidx").write_text("0\n")
    (out.parent / ".train.tsv.tmp-dead.tsv").write_text("x")
    export_gligen_tsv(split_dataset, out, split="all")
    assert _state(out) == "pair" and len(_keys(out)) == 5
    assert sorted(p.name for p in out.parent.iterdir()) == ["train.lineidx", "train.tsv"]


def test_failed_export_keeps_the_old_pair(tmp_path, split_dataset):
    out = tmp_path / "train.tsv"
    export_gligen_tsv(split_dataset, out, split="val")
    before = out.read_bytes(), lineidx_path(out).read_bytes()
    for i in range(6):
        (tmp_path / "imgs" / f"{i}.jpg").unlink(missing_ok=True)
    with pytest.raises(UserError, match="none of the 4 train images"):
        export_gligen_tsv(split_dataset, out)
    assert (out.read_bytes(), lineidx_path(out).read_bytes()) == before
    assert json.loads(read_rows(out)[0][1])["data_id"] == "s:4"
