"""Resolve ``dvc.yaml`` with DVC's own parser and check each command against the CLI.

Kept apart from the tests so the pipeline test and the CLI-match test share one notion
of "the stages DVC would run for this params file".
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import typer

try:  # typer >= 0.20 vendors its own Click; older typer uses click itself
    from typer import _click as click
    from typer._click.exceptions import BadParameter, UsageError
except ImportError:  # pragma: no cover
    import click
    from click import BadParameter, UsageError

ROOT = Path(__file__).resolve().parents[1]


def resolved_stages(params_file: Path, workdir: Path) -> dict[str, str]:
    """Stage name -> command line, as DVC interpolates them with ``params_file``."""
    from dvc.repo import Repo

    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dvc.yaml", workdir / "dvc.yaml")
    shutil.copy(params_file, workdir / "params.yaml")
    shutil.copy(ROOT / SWEEP, workdir / SWEEP)  # dvc.yaml's vars read the sweep profile
    if not (workdir / ".dvc").exists():
        Repo.init(str(workdir), no_scm=True)
    with Repo(str(workdir)) as repo:
        return {s.addressing.split(":")[-1]: s.cmd for s in repo.index.stages}


def check_command(line: str) -> str:
    """Parse a ``groundset ...`` line with the real Click tree; return the command path.

    Raises (typer's) ``UsageError`` for an unknown command or option, a missing required
    option or a value of the wrong type. A path that does not exist yet is fine: DVC
    runs the command only after the stage's dependencies have been produced.
    """
    from pipeline.cli import app

    args = shlex.split(line)
    while args and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", args[0]):  # env assignments
        args.pop(0)
    if not args or args[0] != "groundset":
        raise UsageError(f"stage command does not call groundset: {line!r}")
    group = typer.main.get_command(app)
    args = args[1:]
    global_opts = {o for p in group.params for o in p.opts}
    while args and args[0].startswith("-"):
        if args[0] not in global_opts:
            raise UsageError(f"unknown global option {args[0]}")
        args.pop(0)
    cmd, path = group, []
    while hasattr(cmd, "get_command"):
        if not args:
            raise UsageError(f"no subcommand after {' '.join(path)!r}")
        name = args.pop(0)
        sub = cmd.get_command(click.Context(cmd), name)
        if sub is None:
            raise UsageError(f"no such command {' '.join([*path, name])!r}")
        cmd, path = sub, [*path, name]
    try:
        cmd.make_context(" ".join(path), list(args))
    except BadParameter as e:
        if "does not exist" not in str(e):
            raise
    return " ".join(path)


CODE = ("pipeline", "detectors", "analysis", "trainer")
SWEEP = "params.sweep.yaml"  # the harm sweep's profile (docs/harm.md)

TINY = {
    "demo": {"n_natural": 24, "n_unlabelled": 6, "n_grid": 24, "n_heldout": 4},
    "detector": {"epochs": 1, "batch": 8},
    "base": {"steps": 2, "warmup": 1, "batch_size": 4, "monitor_every": 1},
    "train": {"steps": 2, "warmup": 1, "batch_size": 4, "monitor_every": 1},
    "evaluate": {"betas": "0,1", "steps": 2, "limit": 2},
}
TINY_SWEEP = {"size": 8, "steps": 2, "limit": 2, "betas": "1"}


def tiny_params() -> dict:
    """The demo profile shrunk to a few images and steps: the same stages, seconds each."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    return params


def tiny_project(workdir: Path) -> Path:
    """A git + DVC project holding this repo's dvc.yaml and the tiny params."""
    import subprocess

    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dvc.yaml", workdir / "dvc.yaml")
    for package in CODE:  # stages declare the code they run as deps
        shutil.copytree(
            ROOT / package, workdir / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    sweep = yaml.safe_load((ROOT / SWEEP).read_text())
    sweep["harm"].update(TINY_SWEEP)
    (workdir / SWEEP).write_text(yaml.safe_dump(sweep, sort_keys=False))
    (workdir / ".gitignore").write_text("/data/\n/runs/\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=workdir, check=True, capture_output=True)
    shutil.copy(ROOT / ".dvcignore", workdir / ".dvcignore")
    shutil.copy(ROOT / ".dvc" / "config", workdir / ".dvc" / "config")  # offline plots page
    shutil.copytree(ROOT / ".dvc" / "plots", workdir / ".dvc" / "plots")
    for cmd in (
        ["dvc", "config", "core.analytics", "false"],
        ["git", "add", "-A"],
        [*git, "commit", "-qm", "tiny"],
    ):
        subprocess.run(cmd, cwd=workdir, check=True, capture_output=True)
    return workdir
