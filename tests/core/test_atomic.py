"""Atomic outputs: a failed build leaves the old output untouched and no temp behind."""

import os

import pytest

from pipeline.core.atomic import atomic_output_dir, atomic_path, atomic_write_text, scratch_dir
from pipeline.core.errors import UserError


def test_output_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "out"
    with atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
        assert not out.exists()  # nothing visible before the block ends
    assert (out / "a.txt").read_text() == "first"

    with pytest.raises(RuntimeError), atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("second")
        raise RuntimeError("killed halfway")
    assert (out / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    with atomic_output_dir(out) as tmp:
        (tmp / "b.txt").write_text("third")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_dir_keeps_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "f").write_text("x")
        with atomic_path(tmp_path / "file.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "file.txt").stat().st_mode & 0o777 == 0o644


def test_unwritable_out_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write"), atomic_output_dir(blocker / "out"):
        pass


def test_atomic_path_keeps_suffix_and_publishes_once(tmp_path):
    import numpy as np

    target = tmp_path / "arr.npy"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == tmp_path
        np.save(tmp, np.arange(3))  # np.save appends .npy unless the name has it
        assert not target.exists()
    assert np.load(target).tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arr.npy"]

    with pytest.raises(ValueError), atomic_path(target) as tmp:
        np.save(tmp, np.arange(5))
        raise ValueError
    assert np.load(target).tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arr.npy"]


def test_atomic_write_text_and_scratch_dir(tmp_path):
    atomic_write_text(tmp_path / "sub" / "x.json", "{}\n")
    assert (tmp_path / "sub" / "x.json").read_text() == "{}\n"
    with scratch_dir(tmp_path / "out") as work:
        (work / "big").write_text("scratch")
        assert work.parent == tmp_path
    assert not work.exists()
