"""One CLI vocabulary: --quiet and --version in any position, errors on a clean line."""

from __future__ import annotations

import subprocess
import sys

CLI = [sys.executable, "-m", "pipeline.cli"]


def _run(*args, cwd=None):
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, check=False
    )


def test_version_anywhere():
    for args in (["--version"], ["curate", "--version"], ["ingest", "coco", "--version"]):
        r = _run(*args)
        assert r.returncode == 0 and r.stdout.startswith("groundset ") and not r.stderr, args


def test_quiet_after_the_command_hides_bars_but_not_the_summary(tmp_path):
    r = _run(
        "demo",
        "--out",
        tmp_path / "d",
        "--n-natural",
        "2",
        "--n-unlabelled",
        "0",
        "--n-grid",
        "0",
        "--n-heldout",
        "0",
        "--size",
        "16",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    assert "it/s" not in r.stderr and "img/s" not in r.stderr and "%|" not in r.stderr
    assert "demo world written" in r.stderr  # the summary stays
    loud = _run(
        "demo",
        "--out",
        tmp_path / "e",
        "--n-natural",
        "2",
        "--n-unlabelled",
        "0",
        "--n-grid",
        "0",
        "--n-heldout",
        "0",
        "--size",
        "16",
    )
    assert "%|" in loud.stderr  # without it, a bar is drawn


def test_an_error_starts_on_a_clean_line_after_a_progress_bar(tmp_path):
    bad = tmp_path / "instances.json"
    bad.write_text(
        '{"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}], '
        '"annotations": [], "categories": "not a list"}'
    )
    r = _run("ingest", "coco", "--instances", bad, "--out", tmp_path / "o")
    assert r.returncode == 2
    last = r.stderr.rstrip("\n").split("\n")[-1]
    assert "%|" in r.stderr  # a bar was on screen when the error came
    assert last.split("\r")[-1].startswith("groundset: error: "), repr(last)
    assert "Traceback" not in r.stderr
