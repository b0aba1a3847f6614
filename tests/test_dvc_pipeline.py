"""dvc.yaml against the real CLI and the params schema, and a tiny end-to-end ``dvc repro``."""

from pathlib import Path

import pytest
import yaml

from pipeline.errors import UserError
from pipeline.params import load, validate
from tests.dvc_helpers import ROOT, UsageError, check_command, resolved_stages

PROFILES = ["params.yaml", "params.coco.yaml"]
STAGES = {
    "demo", "ingest@natural", "ingest@grid", "ingest@heldout", "detector", "label",
    "curate", "audit", "init_model", "base", "encode", "train", "evaluate",
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
