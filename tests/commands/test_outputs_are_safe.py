"""No command destroys what groundset did not write (the user's --out mistakes).

Every command that writes an output runs, as a user would type it, against: a folder
of user files as --out; each of its inputs as --out; a file inside an input as --out.
Each must stop before any work with one line and exit 2, and every input and user
file must be byte for byte as it was. The inputs are real: a rendered demo world,
its ingested dataset, an ultralytics export of it and a tiny diffusers model.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.core.outputs import MARKER
from pipeline.stages.demo.world import make_demo
from pipeline.stages.export.yolo import export_yolo
from pipeline.stages.ingest.coco import ingest_coco


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("inputs")
    make_demo(root / "demo", n_natural=4, n_unlabelled=2, n_grid=0, n_heldout=0, size=32, seed=0)
    nat = root / "demo" / "natural"
    ingest_coco(
        nat / "annotations" / "instances_natural.json",
        root / "dataset",
        captions=nat / "annotations" / "captions_natural.json",
        images_root=nat / "images",
    )
    yolo = root / "yolo"
    export_yolo(root / "dataset", yolo)
    shutil.copytree(tiny_model, root / "model")
    (root / "adapters.safetensors").write_bytes(b"not read: the output is refused first")
    (root / "weights.pt").write_bytes(b"not read either")
    return {
        "instances": nat / "annotations" / "instances_natural.json",
        "captions": nat / "annotations" / "captions_natural.json",
        "images": nat / "images",
        "unlabelled": root / "demo" / "unlabelled" / "images",
        "dataset": root / "dataset",
        "yolo_images": yolo / "images" / "train",
        "yolo_labels": yolo / "labels" / "train",
        "data_yaml": yolo / "data.yaml",
        "model": root / "model",
        "adapters": root / "adapters.safetensors",
        "weights": root / "weights.pt",
    }


# command -> (arguments given the inputs, the inputs it reads, whether --out is a file)
COMMANDS = {
    "ingest coco": (
        lambda i: [
            "ingest",
            "coco",
            "--instances",
            i["instances"],
            "--captions",
            i["captions"],
            "--images-root",
            i["images"],
        ],
        ["instances", "captions", "images"],
        False,
    ),
    "ingest yolo": (
        lambda i: [
            "ingest",
            "yolo",
            "--images",
            i["yolo_images"],
            "--labels",
            i["yolo_labels"],
            "--names",
            i["data_yaml"],
        ],
        ["yolo_images", "yolo_labels", "data_yaml"],
        False,
    ),
    "label": (
        lambda i: ["label", "--images", i["unlabelled"], "--weights", i["weights"]],
        ["unlabelled", "weights"],
        False,
    ),
    "detector train": (
        lambda i: ["detector", "train", "--data", i["dataset"], "--weights", i["weights"]],
        ["dataset", "images", "weights"],
        False,
    ),
    "curate": (lambda i: ["curate", i["dataset"]], ["dataset", "images"], False),
    "export coco": (lambda i: ["export", "coco", i["dataset"]], ["dataset", "images"], False),
    "export yolo": (lambda i: ["export", "yolo", i["dataset"]], ["dataset", "images"], False),
    "export gligen-tsv": (
        lambda i: ["export", "gligen-tsv", i["dataset"]],
        ["dataset", "images"],
        True,
    ),
    "audit": (lambda i: ["audit", i["dataset"]], ["dataset", "images"], False),
    "init-model": (lambda i: ["init-model", "--tiny"], [], False),
    "demo-model": (lambda i: ["demo-model"], [], False),
    "demo": (
        lambda i: [
            "demo",
            "--n-natural",
            "1",
            "--n-unlabelled",
            "0",
            "--n-grid",
            "0",
            "--n-heldout",
            "0",
            "--size",
            "16",
        ],
        [],
        False,
    ),
    "encode": (
        lambda i: ["encode", i["dataset"], "--model", i["model"]],
        ["dataset", "images", "model"],
        False,
    ),
    "train": (
        lambda i: ["train", "--model", i["model"], "--data", i["dataset"], "--steps", "1"],
        ["model", "dataset", "images"],
        False,
    ),
    "sample": (
        lambda i: [
            "sample",
            "--model",
            i["model"],
            "--layouts",
            i["dataset"],
            "--adapters",
            i["adapters"],
        ],
        ["model", "dataset", "images", "adapters"],
        False,
    ),
    "evaluate": (
        lambda i: [
            "evaluate",
            "--model",
            i["model"],
            "--adapters",
            i["adapters"],
            "--layouts",
            i["dataset"],
            "--weights",
            i["weights"],
        ],
        ["model", "adapters", "dataset", "images", "weights"],
        False,
    ),
    "export-gligen": (
        lambda i: ["export-gligen", "--model", i["model"], "--adapters", i["adapters"]],
        ["model", "adapters"],
        False,
    ),
    "denoise-gap": (
        lambda i: [
            "denoise-gap",
            "--model",
            i["model"],
            "--adapters",
            i["adapters"],
            "--layouts",
            i["dataset"],
        ],
        ["model", "adapters", "dataset", "images"],
        True,
    ),
}


def _snapshot(paths) -> dict:
    """Every file under the given paths with the sha256 of its bytes."""
    out = {}
    for p in paths:
        for f in [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()):
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _refused(monkeypatch, capsys, args) -> str:
    monkeypatch.setattr(sys, "argv", ["groundset", "--quiet", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2, err
    assert len(err) == 1 and err[0].startswith("groundset: error: "), err
    return err[0]


def _cases(inputs, names):
    """(label, --out) pairs: each input itself, and a file inside each input folder."""
    for name in names:
        path = inputs[name]
        yield f"{name} itself", path
        if path.is_dir():
            yield f"a file inside {name}", next(q for q in sorted(path.rglob("*")) if q.is_file())


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_inputs_are_never_an_output(command, inputs, monkeypatch, capsys):
    args, names, _ = COMMANDS[command]
    before = _snapshot(inputs.values())
    for case, out in _cases(inputs, names):
        line = _refused(monkeypatch, capsys, [*args(inputs), "--out", out, "--overwrite"])
        assert "overlaps the input" in line, (case, line)
        assert _snapshot(inputs.values()) == before, case


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_folder_of_user_files_is_not_replaced(command, inputs, tmp_path, monkeypatch, capsys):
    args, _, is_file = COMMANDS[command]
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    (mine / "sub" / "data.csv").write_text("1,2\n")
    before = _snapshot([mine, *inputs.values()])
    line = _refused(monkeypatch, capsys, [*args(inputs), "--out", mine])
    assert ("is a folder" if is_file else "not a groundset output") in line
    assert _snapshot([mine, *inputs.values()]) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no lock or staging left


def test_an_earlier_output_of_the_same_kind_is_replaced_and_leftovers_cleaned(inputs, tmp_path):
    out = tmp_path / "yolo"
    export_yolo(inputs["dataset"], out)
    assert (out / MARKER).is_file()
    (tmp_path / ".yolo.tmp-killed").mkdir()  # a killed run's staging folder
    (tmp_path / ".yolo.old-123").mkdir()
    export_yolo(inputs["dataset"], out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["yolo"]


def test_overwrite_replaces_user_files_but_only_when_asked(inputs, tmp_path):
    from pipeline.core.errors import UserError

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="--overwrite"):
        export_yolo(inputs["dataset"], mine)
    export_yolo(inputs["dataset"], mine, overwrite=True)
    assert not (mine / "notes.txt").exists() and (mine / "data.yaml").is_file()


def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_it(tmp_path):
    from pipeline.core.errors import UserError
    from pipeline.core.outputs import claim_output

    out = tmp_path / "out"
    with claim_output(out, kind="test"):
        import subprocess

        probe = (
            "from pipeline.core.outputs import claim_output\n"
            f"with claim_output({str(out)!r}, kind='test'): pass\n"
        )
        other = subprocess.run(
            [sys.executable, "-c", probe], check=False, capture_output=True, text=True
        )
        assert other.returncode != 0 and "another groundset run" in other.stderr
    with claim_output(out, kind="test"):  # released when the holder ends (or is killed)
        pass
    inside = claim_output(tmp_path / "in" / "x", kind="test", inputs=[tmp_path / "in"])
    with pytest.raises(UserError, match="overlaps"), inside:
        pass
    assert not Path(tmp_path / ".out.lock").exists()


def test_a_full_disk_is_one_line_and_keeps_the_previous_output(
    inputs, tmp_path, monkeypatch, capsys
):
    import errno

    import pyarrow.parquet as pq

    out = tmp_path / "curated"
    monkeypatch.setattr(
        sys, "argv", ["groundset", "-q", "curate", str(inputs["dataset"]), "--out", str(out)]
    )
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code in (0, None)
    before = _snapshot([out])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[1]))

    monkeypatch.setattr(pq, "write_table", full)
    line = _refused(monkeypatch, capsys, ["curate", inputs["dataset"], "--out", out])
    assert "No space left on device" in line
    assert _snapshot([out]) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curated"]
