"""Resumable work folders keep finished pieces only for the same job."""

import pytest

from pipeline.core.errors import UserError
from pipeline.core.resumable import JOB_FILE, open_job_dir


def test_same_job_keeps_pieces_and_drops_half_written_ones(tmp_path):
    work = open_job_dir(tmp_path / "work", {"a": 1})
    (work / "shard-00000.parquet").write_text("done")
    (work / ".shard-00001.parquet.tmp-123.parquet").write_text("half")
    (work / "sub").mkdir()
    (work / "sub" / ".piece.tmp-9").mkdir()
    open_job_dir(work, {"a": 1})
    assert sorted(p.name for p in work.iterdir()) == [JOB_FILE, "shard-00000.parquet", "sub"]
    assert not any((work / "sub").iterdir())


def test_other_job_restarts_or_is_refused(tmp_path):
    work = open_job_dir(tmp_path / "work", {"a": 1})
    (work / "shard-00000.parquet").write_text("done")
    open_job_dir(work, {"a": 2})  # other settings or images: start over
    assert sorted(p.name for p in work.iterdir()) == [JOB_FILE]

    (work / "piece").write_text("x")
    with pytest.raises(UserError, match="another job"):
        open_job_dir(work, {"a": 3}, other_job="refuse")
    assert (work / "piece").is_file()


def test_refuse_accepts_an_empty_folder(tmp_path):
    (tmp_path / "out").mkdir()
    open_job_dir(tmp_path / "out", {"a": 1}, other_job="refuse")
    assert (tmp_path / "out" / JOB_FILE).is_file()
