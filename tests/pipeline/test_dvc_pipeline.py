"""dvc.yaml against the real CLI and the params schema, and a tiny end-to-end ``dvc repro``."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core.errors import UserError
from pipeline.core.params import load, validate
from tests.dvc_helpers import (
    ROOT,
    TINY_SWEEP,
    UsageError,
    check_command,
    resolved_stages,
    tiny_project,
)

PROFILES = ["params.yaml", "params.coco.yaml", "params.sdxl.yaml"]
STAGES = {
    "check_params",
    "demo",
    "ingest@natural",
    "ingest@grid",
    "ingest@heldout",
    "detector",
    "label",
    "curate",
    "audit",
    "audit_plots",
    "init_model",
    "base",
    "encode",
    "train",
    "denoise_gap",
    "evaluate",
    "harm_mix",
    "harm_audit",
    "harm_encode",
    "harm_train",
    "harm_eval",
    "harm_score",
}


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_validate_against_one_schema(profile):
    load(ROOT / profile)


def test_schema_rejects_misfits():
    good = yaml.safe_load((ROOT / "params.yaml").read_text())
    for mutate, word in [
        (lambda p: p["audit"].update(remediate="maybe"), "remediate"),
        (lambda p: p["curate"].update(max_boxes="many"), "max_boxes"),
        (lambda p: p["train"].update(stepz=3), "stepz"),
        (lambda p: p["evaluate"].update(betas="0,2"), "betas"),
        (lambda p: p.pop("label"), "label"),
    ]:
        bad = yaml.safe_load(yaml.safe_dump(good))
        mutate(bad)
        with pytest.raises(UserError, match=word):
            validate(bad)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_stage_command_exists_in_the_cli(profile, tmp_path):
    stages = resolved_stages(ROOT / profile, tmp_path)
    assert set(stages) == STAGES
    used = {name: check_command(cmd) for name, cmd in stages.items()}
    assert all("--quiet" in cmd.split() for cmd in stages.values())
    assert used["audit"] == "audit" and used["detector"] == "detector train"


def test_checker_catches_wrong_commands():
    with pytest.raises(UsageError):
        check_command("groundset --quiet no-such-stage --out x")
    with pytest.raises(UsageError):
        check_command("groundset --quiet demo --out x --no-such-option 3")
    with pytest.raises(UsageError):
        check_command("groundset --quiet demo --out x --seed notanumber")
    with pytest.raises(UsageError):
        check_command("python train.py")


def test_outputs_stay_out_of_git():
    ignored = (ROOT / ".gitignore").read_text().split()
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for stage in dvc["stages"].values():
        body = stage.get("do", stage)
        for out in body.get("outs", []) + body.get("metrics", []) + body.get("plots", []):
            path = next(iter(out)) if isinstance(out, dict) else out
            top = Path(path).parts[0]
            assert f"/{top}/" in ignored, path


def _dvc(work, *args, timeout=1500):
    return subprocess.run(
        ["dvc", *args], cwd=work, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """``dvc repro`` of the real dvc.yaml on a tiny demo: every stage through the CLI."""
    if shutil.which("dvc") is None or shutil.which("git") is None:
        pytest.skip("dvc or git not on PATH")
    work = tiny_project(tmp_path_factory.mktemp("pipeline"))
    r = _dvc(work, "repro")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return work, r.stdout


@pytest.mark.slow
def test_tiny_pipeline_runs_every_stage(tiny_run):
    work, log = tiny_run
    for stage in STAGES:
        assert f"Running stage '{stage}'" in log
    audit = json.loads((work / "runs/audit/audit.json").read_text())
    assert audit["verdict"] == "fail" and audit["final_verdict"] == "pass"  # grid part filtered
    shares = {k: v["share"] for k, v in audit["grid_share"]["per_source"].items()}
    assert shares["demo-grid"] > 0.5 > shares["demo-natural"]
    audited = json.loads((work / "data/audited/manifest.json").read_text())
    assert audited["counts"]["images_rejected"].get("grid_like", 0) > 0
    metrics = json.loads((work / "runs/eval/metrics.json").read_text())
    runs = metrics["runs"]
    assert any("gates closed" in k for k in runs) and {"beta=0", "beta=1"} <= set(runs)
    assert all("ap50" in v for v in runs.values())
    assert (work / "runs/train/adapters.safetensors").is_file()
    gap = json.loads((work / "runs/learning/denoise_gap.json").read_text())
    assert set(gap["timesteps"]) == {"100", "300", "500", "700", "900"}


@pytest.mark.slow
def test_second_repro_runs_nothing(tiny_run):
    work, _ = tiny_run
    r = _dvc(work, "repro")
    assert r.returncode == 0 and "Running stage" not in r.stdout, r.stdout


@pytest.mark.slow
def test_metrics_and_plots_show(tiny_run, tmp_path):
    work, _ = tiny_run
    r = _dvc(work, "metrics", "show", "--json")
    assert r.returncode == 0, r.stderr
    shown = json.dumps(json.loads(r.stdout))
    assert "runs/audit/summary.json" in shown and "runs/eval/summary.json" in shown
    assert "runs/audit/audit.json" not in shown and "worst_images" not in shown  # compact
    r = _dvc(work, "plots", "show", "--json")
    assert r.returncode == 0, r.stderr
    plots = json.dumps(json.loads(r.stdout))
    for name in ("beta_sweep.csv", "train/loss.tsv", "detail/psnr", "grid_score_demo-grid.csv"):
        assert name in plots, name


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_the_plots_page_renders_offline_in_chromium(tiny_run, tmp_path):
    """dvc's own page loads vega from a CDN and is blank offline; the project's template
    inlines it. Every vega plot must draw with the browser's network switched off."""
    work, _ = tiny_run
    r = _dvc(work, "plots", "show", "-o", str(tmp_path / "plots"))
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "<script src=" not in page and "cdn.jsdelivr" not in page
    n_plots = page.count("vegaEmbed(")
    assert n_plots >= 4
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--proxy-server=127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            (tmp_path / "plots" / "index.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    drawn = dom.count('class="marks"')  # vega's canvas (or svg) for each plot it drew
    assert drawn == n_plots, (drawn, n_plots, dom[:500])


@pytest.mark.slow
def test_tiny_harm_sweep_two_arms_as_experiments(tiny_run, tmp_path):
    """Two arms of the harm sweep (docs/harm.md) as DVC experiments, read back by
    ``groundset harm-plots --exp``. Runs before the gate test below, which leaves the
    audit failing (the arms' base model depends on the audited data)."""
    work, log = tiny_run
    assert "harm-score: share 0," in log  # the default repro ran the smoke arm
    for name, share in (("arm-0", "0.0"), ("arm-50", "0.5")):
        r = _dvc(work, "exp", "run", "-n", name, "-S", f"params.sweep.yaml:harm.share={share}")
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        ran = {line for line in r.stdout.splitlines() if line.startswith("Running stage")}
        harm = {f"Running stage '{s}':" for s in STAGES if s.startswith("harm_")}
        # only the arm's stages run (arm-0 is the smoke arm's share: maybe none at all)
        assert ran == harm if name == "arm-50" else ran <= harm, ran
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "harm-plots", "--exp", "arm-0", "--exp", "arm-50"]
        + ["--repo", str(work), "--out", str(tmp_path / "plots"), "--keep", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    arms = {n: json.loads((tmp_path / n / "arm.json").read_text()) for n in ("arm-0", "arm-50")}
    size = TINY_SWEEP["size"]
    assert arms["arm-0"]["mix"]["natural"] == size and arms["arm-0"]["mix"]["grid_like"] == 0
    assert arms["arm-50"]["mix"]["grid_like"] == size // 2
    assert sum(arms["arm-50"]["trained_on"]["sources"].values()) == size  # the mix, unfiltered
    for arm in arms.values():
        assert set(arm["betas"]) == {TINY_SWEEP["betas"]}
        assert {"ap50", "grid_score", "tiling_score", "tiling_model_res"} <= set(arm["betas"]["1"])
    for f in ("table.md", "tiling_vs_share.png", "tradeoff.png", "samples.png"):
        assert (tmp_path / "plots" / f).is_file(), f
    assert "50% grid-like" in (tmp_path / "plots" / "table.md").read_text()


@pytest.mark.slow
def test_exp_run_sets_params_and_the_gate_stops_the_run(tiny_run):
    work, _ = tiny_run
    r = _dvc(work, "exp", "run", "-s", "audit", "-S", "audit.max_grid_share=0.9")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    audit = json.loads((work / "runs/audit/audit.json").read_text())
    assert audit["thresholds"]["max_grid_share"] == 0.9
    # exp run applies its params to the workspace, so the share goes back explicitly
    r = _dvc(
        work,
        "exp",
        "run",
        "-s",
        "audit",
        "-S",
        "audit.remediate=none",
        "-S",
        "audit.max_grid_share=0.05",
    )
    assert r.returncode != 0
    assert "exit code 3" in (r.stdout + r.stderr) or "gate failed" in (r.stdout + r.stderr)
