"""dvc.yaml reruns exactly what changed, and runs ``check-params`` before anything else.

Code deps drift silently: a missing one trusts a stale output, a superfluous one reruns
hours of training for an unrelated edit. So each stage's deps are checked against the
code its command runs (found from imports, see ``dvc_code_deps``), and the checker is
shown to catch both mistakes. Fix a failure with ``python -m tests.pipeline.dvc_code_deps
--write``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
import yaml

from tests.pipeline import dvc_code_deps as cd

ROOT = cd.ROOT
PROFILES = ["params.yaml", "params.coco.yaml", "params.sdxl.yaml"]


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, tuple[list[str], set[str]]]:
    """{stage: (its resolved deps, the files its command runs)} for the demo profile."""
    resolved = cd.resolved(ROOT / "params.yaml", tmp_path_factory.mktemp("dvc"))
    return cd.stage_files(resolved)


def test_every_stage_lists_exactly_the_code_it_runs(stages):
    problems = cd.report(stages, cd.project_files())
    if problems:
        pytest.fail(problems, pytrace=False)


def test_code_deps_come_first_and_sorted(stages):
    for name, (deps, _) in stages.items():
        code = [d for d in deps if cd.is_code(d)]
        assert deps[: len(code)] == code == sorted(code), name


def test_checker_reports_missing_and_unused_code():
    universe = cd.project_files()
    files = cd.command_files("curate")
    right = cd.collapse(files, universe)
    assert cd.diff(right, files, universe) == ([], [])

    missing_one = [d for d in right if d != "pipeline/stages/curate.py"]
    assert cd.diff(missing_one, files, universe) == (["pipeline/stages/curate.py"], [])

    extras = ["trainer/train.py", "analysis", "pipeline/stages", "pipeline/no_such.py"]
    add, remove = cd.diff([*right, *extras, "data/curated"], files, universe)
    assert (add, remove) == ([], extras)  # non-code deps are never judged

    # a directory dep covers its files, so dropping it asks for each of them back
    demo = cd.command_files("demo")
    assert "pipeline/stages/demo" in cd.collapse(demo, universe)
    without = [d for d in cd.collapse(demo, universe) if d != "pipeline/stages/demo"]
    assert cd.diff(without, demo, universe) == (["pipeline/stages/demo"], [])

    text = cd.report({"curate": (missing_one + ["trainer/train.py"], files)}, universe)
    assert "  stage curate:\n    add:\n      - pipeline/stages/curate.py\n" in text
    assert "    remove:\n      - trainer/train.py" in text
    assert cd.FIX in text


def test_closure_follows_every_kind_of_import(tmp_path):
    pkg = tmp_path / "pipeline"
    files = {
        "__init__.py": "",
        "cmd.py": "def run():\n    from pipeline.sub import leaf\n    from . import rel\n",
        "rel.py": "from .sub.deep import thing\n",
        "sub/__init__.py": "import pipeline.side\n",
        "sub/leaf.py": "import json\nPATH = 'table.json'\n",
        "sub/table.json": "{}",
        "sub/deep.py": "thing = 1\n",
        "side.py": "",
        "unused.py": "import pipeline.cmd\n",
        "sub/other.json": "{}",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    got = cd.closure(["pipeline.cmd"], root=tmp_path)
    want = {f"pipeline/{n}" for n in files} - {"pipeline/unused.py", "pipeline/sub/other.json"}
    assert got == want


def test_command_name_skips_env_and_global_options():
    line = "OMP_NUM_THREADS=2 groundset --quiet detector train --data x"
    assert cd.command_name(line) == "detector"
    with pytest.raises(ValueError):
        cd.command_name("python train.py")


@pytest.mark.parametrize(
    "edited",
    [
        "pipeline/stages/curate.py",
        "pipeline/stages/label/records.py",
        "trainer/train.py",
        "analysis/reference_coco.json",
        "pipeline/core/params.py",
        "pipeline/cli.py",
    ],
)
def test_an_edit_reruns_exactly_the_stages_that_run_it(stages, edited):
    """DVC reruns a stage when a dep (a file, or a directory holding it) changes."""
    assert edited in cd.project_files(), f"{edited} moved: pick another sample"
    rerun = {name for name, (deps, _) in stages.items() if any(cd.covers(d, edited) for d in deps)}
    runs_it = {name for name, (_, files) in stages.items() if edited in files}
    assert rerun == runs_it
    assert runs_it, f"no stage runs {edited}"
    if edited == "pipeline/stages/curate.py":
        assert rerun == {"curate"}
    if edited == "pipeline/cli.py":
        assert rerun == set(stages)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_stage_runs_after_check_params(profile, tmp_path):
    from dvc.repo import Repo

    from tests.dvc_helpers import resolved_stages

    resolved_stages(ROOT / profile, tmp_path)
    with Repo(str(tmp_path)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it needs
        by_name = {s.addressing.split(":")[-1]: s for s in graph.nodes}
        check = by_name.pop("check_params")
        late = {n: s for n, s in by_name.items() if check not in nx.descendants(graph, s)}
        roots = sorted(n for n, s in late.items() if graph.out_degree(s) == 0)
    assert not late, f"{sorted(late)} may run before check_params: add runs/params.ok to {roots}"


def _check_params(params: Path, out: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("groundset")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline.cli"]
    return subprocess.run(
        [*cmd, "--quiet", "check-params", str(params), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _write_params(path: Path, change) -> Path:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda p: p["train"].update(steps="abc"), "$.train.steps"),
        (lambda p: p["curate"].update(typo=1), "typo"),
        (lambda p: p["curate"].update(val_fraction=7), "curate.val_fraction"),
        (lambda p: p["audit"].update(threshold="high", typo=1), "$.audit.threshold"),
    ],
)
def test_check_params_names_the_bad_key_in_one_line(tmp_path, change, key):
    params = _write_params(tmp_path / "params.yaml", change)
    r = _check_params(params, tmp_path / "runs/params.ok")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("groundset: error: invalid params: "), r.stderr
    assert key in lines[0] and "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "runs/params.ok").exists()


@pytest.mark.parametrize("profile", PROFILES)
def test_check_params_passes_both_profiles(tmp_path, profile):
    out = tmp_path / "runs/params.ok"
    r = _check_params(ROOT / profile, out)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == f"{profile} is valid\n"
    assert not [p for p in out.parent.iterdir() if p != out]  # no temp file left behind


def test_check_params_marker_ignores_the_values(tmp_path):
    """Changing a value must not change the marker, or every root stage would rerun."""
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, steps in ((first, 3500), (second, 7)):
        folder.mkdir()
        params = _write_params(
            folder / "params.yaml", lambda p, s=steps: p["train"].update(steps=s)
        )
        assert _check_params(params, folder / "params.ok").returncode == 0
    assert (first / "params.ok").read_bytes() == (second / "params.ok").read_bytes()
