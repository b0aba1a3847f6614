"""One CLI vocabulary: --quiet and --version in any position, errors on a clean line."""

from __future__ import annotations

import os
import subprocess
import sys

CLI = [sys.executable, "-m", "pipeline.cli"]
TINY_DEMO = [
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
]


def _run(*args, cwd=None):
    # as a user's shell runs it: no quiet mode left over from in-process CLI tests, and
    # stdout buffered as usual; bars drawn at once (TQDM_DELAY=0), as they are for work
    # longer than the default delay
    drop = ("GROUNDSET_QUIET", "PYTHONUNBUFFERED")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["TQDM_DELAY"] = "0"
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, check=False, env=env
    )


def test_version_anywhere():
    for args in (["--version"], ["curate", "--version"], ["ingest", "coco", "--version"]):
        r = _run(*args)
        assert r.returncode == 0 and r.stdout.startswith("groundset ") and not r.stderr, args


def test_quiet_after_the_command_hides_bars_but_not_the_summary(tmp_path):
    r = _run("demo", "--out", tmp_path / "d", *TINY_DEMO, "-q")
    assert r.returncode == 0, r.stderr
    assert "it/s" not in r.stderr and "img/s" not in r.stderr and "%|" not in r.stderr
    assert "demo world written" in r.stderr  # the summary stays
    loud = _run("demo", "--out", tmp_path / "e", *TINY_DEMO)
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


ALIASES = [  # (command, new option, deprecated alias, value)
    (["label", "--images", "i", "--out", "o"], "--detector", "--weights", "w.pt"),
    (
        ["label", "--images", "i", "--detector", "w.pt", "--out", "o"],
        "--batch-size",
        "--batch",
        "4",
    ),
    (["detector", "train", "--data", "d", "--out", "o"], "--detector", "--weights", "w.pt"),
    (["detector", "train", "--data", "d", "--out", "o"], "--batch-size", "--batch", "4"),
    (["evaluate", "--layouts", "l", "--out", "o"], "--detector", "--weights", "w.pt"),
    (["sample", "--model", "m", "--layouts", "l", "--out", "o"], "--sampler", "--scheduler", "dpm"),
    (["export-gligen", "--model", "m", "--out", "o"], "--sampler", "--scheduler", "dpm"),
]


def _params(args):
    import typer

    from pipeline.cli import app

    cmd, args = typer.main.get_command(app), list(args)
    while hasattr(cmd, "get_command"):
        name = args.pop(0)
        cmd = cmd.get_command(cmd.make_context(name, [], resilient_parsing=True), name)
    return cmd.make_context("x", args, resilient_parsing=True).params


def test_one_vocabulary_with_the_old_names_still_accepted():
    for base, new, old, value in ALIASES:
        got_new, got_old = _params([*base, new, value]), _params([*base, old, value])
        assert got_new == got_old, (base, new)
        assert str(value) in map(str, got_new.values()), (base, new)


def test_quiet_hides_bars_never_a_summary_that_says_something_was_skipped(tmp_path):
    from tests.dataset_factory import make_dataset, write_jpeg

    write_jpeg(tmp_path / "images" / "a.jpg", 32, 24, seed=0)  # b.jpg is missing
    images = [{"id": 1, "file": "a.jpg"}, {"id": 2, "file": "b.jpg"}]
    boxes = [{"image": 0, "xyxy": (0.1, 0.1, 0.5, 0.5)}, {"image": 1, "xyxy": (0.2, 0.2, 0.6, 0.6)}]
    make_dataset(tmp_path / "ds", "s", images, boxes, tmp_path / "images")
    r = _run("-q", "export", "yolo", tmp_path / "ds", "--out", tmp_path / "yolo")
    assert r.returncode == 0, r.stderr
    assert "1 skipped (image file missing)" in r.stdout and "%|" not in r.stderr


def _all_commands() -> list[list[str]]:
    from pipeline.cli import COMMANDS

    groups = {"ingest": ["coco", "yolo"], "detector": ["train"]}
    return [[c, *([g] if g else [])] for c in COMMANDS for g in groups.get(c, [None])]


def test_help_has_no_type_label_on_flags_and_keeps_every_bracket(monkeypatch):
    """Rich help labelled flags "<bool>" and ate every "[default: ...]" written in a help text.

    In-process (``CliRunner``) so that 18 commands cost one import of each module.
    """
    import re

    from typer.testing import CliRunner

    from pipeline.cli import app

    monkeypatch.setenv("COLUMNS", "100")
    runner = CliRunner()
    seen_brackets = 0
    for command in _all_commands():
        r = runner.invoke(app, [*command, "--help"])
        assert r.exit_code == 0, (command, r.output)
        assert "<bool>" not in r.output, command
        assert not re.search(r"\w \.(\s|$)", r.output), (command, r.output)
        seen_brackets += r.output.count("[default: the model's own]")
    assert seen_brackets >= 1  # train's --resolution says so in its help text


def test_the_quick_exit_keeps_exit_codes_and_flushes_piped_output(tmp_path):
    """``pipeline.cli.run`` leaves with ``os._exit``: what was printed to a pipe must still
    arrive whole, and the exit code must be the command's."""
    r = _run("--version")  # print() to a pipe: block-buffered until flushed
    assert r.returncode == 0 and r.stdout.startswith("groundset ")
    r = _run("audit", tmp_path / "missing", "--out", tmp_path / "o")
    assert r.returncode == 2 and r.stderr.startswith("groundset: error: ")
    assert not (tmp_path / "o").exists()
