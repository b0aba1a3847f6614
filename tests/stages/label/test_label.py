"""The label stage end to end with a tiny YOLOv8n built from ultralytics' yaml (no download).

Random weights give meaningless but deterministic boxes, which is all the plumbing
needs: accounting, rejects, origins, captions, sharding, SIGKILL resume and dask.
Detection quality is tested against real weights in ``test_label_real.py``.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from PIL import Image

from detectors.ultralytics_backend import fingerprint_weights, resolve_weights
from pipeline.core.dataset import read_dataset
from pipeline.core.errors import UserError
from pipeline.core.resumable import open_job_dir
from pipeline.stages.label.captions import compose_captions, plural, read_sidecar
from pipeline.stages.label.run import label, work_dir

TINY = {"weights": "yolov8n.yaml", "conf": 1e-6, "max_det": 3, "imgsz": 64, "batch": 2}
CLI = [sys.executable, "-m", "pipeline.cli"]


def make_images(root: Path, n: int, seed: int = 0, size=(64, 48)) -> list[str]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        w, h = size[0] + 8 * (i % 3), size[1] + 4 * (i % 2)
        name = f"img_{i:03d}.jpg" if i % 4 else f"sub/img_{i:03d}.png"
        (root / name).parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / name)
        names.append(name)
    return names


def tiny_origin() -> str:
    return "yolov8n@" + fingerprint_weights(*resolve_weights("yolov8n.yaml"))[:12]


def test_compose_captions_in_gligen_detection_style():
    idx = [0, 0, 0, 0, 2, 2, 2]
    phrases = ["person", "bus", "car", "car", "a knife", "knife", "apple"]
    caps = compose_captions(idx, phrases, 3)
    assert caps == ["a person, a bus and two cars", "", "two knives and an apple"]
    assert plural("traffic light") == "traffic lights" and plural("person") == "people"
    assert plural("wine glass") == "wine glasses" and plural("teddy bear") == "teddy bears"
    assert compose_captions([], [], 2) == ["", ""]


def test_sidecar_jsonl_csv_and_bad_lines(tmp_path):
    (tmp_path / "c.jsonl").write_text(
        '{"file": "a.jpg", "caption": "one"}\n\n{"file": "a.jpg", "caption": "two"}\n'
    )
    assert read_sidecar(tmp_path / "c.jsonl") == {"a.jpg": ["one", "two"]}
    (tmp_path / "c.csv").write_text('file,caption\nb.jpg,"a dog, running"\n')
    assert read_sidecar(tmp_path / "c.csv") == {"b.jpg": ["a dog, running"]}
    (tmp_path / "bad.jsonl").write_text('{"file": "a.jpg", "caption": "ok"}\n{oops\n')
    with pytest.raises(UserError, match="bad.jsonl:2"):
        read_sidecar(tmp_path / "bad.jsonl")
    (tmp_path / "bad.csv").write_text("name,text\na,b\n")
    with pytest.raises(UserError, match="header"):
        read_sidecar(tmp_path / "bad.csv")


def test_label_writes_an_accounted_dataset_with_rejects_origins_and_captions(tmp_path):
    root = tmp_path / "photos"
    names = make_images(root, 7)
    (root / "empty.jpg").write_bytes(b"")
    (root / "page.jpg").write_text("<html>not an image</html>")
    (root / "README.txt").write_text("ignored")
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    os.symlink(outside, root / "leak.png")
    (tmp_path / "caps.jsonl").write_text(json.dumps({"file": names[1], "caption": "my own"}) + "\n")
    (tmp_path / "map.yaml").write_text("'0': a thing zero\n")

    m = label(
        root,
        tmp_path / "out",
        captions=tmp_path / "caps.jsonl",
        phrase_map=tmp_path / "map.yaml",
        shard_size=3,
        **TINY,
    )
    c = m["counts"]
    assert c["images_in"] == 10 and c["images_kept"] == 7
    assert c["images_rejected"] == {"empty_file": 1, "not_an_image": 1, "symlink_outside_root": 1}
    assert m["files_ignored"] == 1
    assert m["params"]["conf"] == TINY["conf"] and m["params"]["iou"] == 0.7
    assert m["params"]["max_det"] == 3 and m["params"]["imgsz"] == 64
    assert m["detector"]["origin"] == tiny_origin()
    assert m["detector"]["sha256"].startswith(tiny_origin().split("@")[1])
    assert not work_dir(tmp_path / "out").exists()  # work dir removed once done

    ds = read_dataset(tmp_path / "out")
    rec = ds.records.to_pylist()
    assert [r["file"] for r in rec] == sorted(names)
    assert all(r["image_id"] == f"photos:{r['file']}" for r in rec)
    assert ds.image_path("photos", rec[0]["file"]).is_file()
    by_file = {r["file"]: r for r in rec}
    assert by_file[names[1]]["captions"] == ["my own"]
    for r in rec:
        im = Image.open(root / r["file"])
        assert (r["width"], r["height"]) == im.size
        assert 0 < len(r["boxes"]) <= 3
        for b in r["boxes"]:
            assert b["origin"] == tiny_origin()
            assert 0 <= b["x0"] < b["x1"] <= 1 and 0 <= b["y0"] < b["y1"] <= 1
            assert b["phrase"] == ("a thing zero" if b["category"] == "0" else b["category"])
        if r["file"] != names[1]:
            assert r["captions"] == compose_captions(
                [0] * len(r["boxes"]), [b["phrase"] for b in r["boxes"]], 1
            )
    assert c["boxes_kept"] == int(pc.sum(pc.list_value_length(ds.records["boxes"])).as_py())


def test_prepare_work_keeps_shards_only_for_the_same_job(tmp_path):
    work = tmp_path / "w.work"
    open_job_dir(work, {"a": 1})
    (work / "shard-00000.parquet").write_bytes(b"x")
    (work / ".shard-00001.parquet.tmp-9").write_bytes(b"half")
    open_job_dir(work, {"a": 1})
    assert (work / "shard-00000.parquet").exists()
    assert not (work / ".shard-00001.parquet.tmp-9").exists()
    open_job_dir(work, {"a": 2})  # other settings or images: start over
    assert not (work / "shard-00000.parquet").exists()


def _cli_label(images: Path, out: Path, *extra) -> list[str]:
    return [
        *CLI,
        "--quiet",
        "label",
        "--images",
        str(images),
        "--out",
        str(out),
        "--weights",
        "yolov8n.yaml",
        "--conf",
        "1e-6",
        "--max-det",
        "3",
        "--imgsz",
        "320",
        "--batch",
        "1",
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_then_rerun_gives_identical_records(tmp_path):
    root = tmp_path / "imgs"
    make_images(root, 40, seed=3, size=(160, 120))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    ref, out = tmp_path / "ref", tmp_path / "out"
    label(
        root, ref, weights="yolov8n.yaml", conf=1e-6, max_det=3, imgsz=320, batch=1, shard_size=2
    )  # the uninterrupted run, same settings as the CLI below

    work = work_dir(out)
    log = tmp_path / "killed.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            _cli_label(root, out, "--shard-size", "2"), stdout=subprocess.DEVNULL, stderr=err
        )
        deadline = time.time() + 300
        while len(list(work.glob("shard-*.parquet"))) < 3 and proc.poll() is None:
            assert time.time() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = sorted(work.glob("shard-*.parquet"))
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    assert 3 <= len(done) < 21 and not out.exists(), "the kill must land mid-run"

    rerun = subprocess.run(
        _cli_label(root, out, "--shard-size", "2"), check=True, capture_output=True, text=True
    )
    assert f"resuming, {len(done)} of 21 shards already done" in rerun.stderr
    a, b = read_dataset(ref), read_dataset(out)
    assert a.records.equals(b.records) and a.rejects.equals(b.rejects)
    assert b.records.num_rows == 40 and b.manifest["counts"] == a.manifest["counts"]


@pytest.mark.slow
def test_dask_local_workers_and_external_scheduler_match_in_process(tmp_path):
    from dask.distributed import LocalCluster

    root = tmp_path / "imgs"
    make_images(root, 6, seed=5)
    (root / "zero.png").write_bytes(b"")
    ref = label(root, tmp_path / "ref", shard_size=2, **TINY)
    local = label(root, tmp_path / "local", shard_size=2, workers=2, **TINY)
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        remote = label(
            root, tmp_path / "remote", shard_size=2, scheduler=cluster.scheduler_address, **TINY
        )
    a = read_dataset(tmp_path / "ref").records
    for m, d in ((local, "local"), (remote, "remote")):
        assert m["counts"] == ref["counts"]
        b = read_dataset(tmp_path / d).records
        assert b["file"].equals(a["file"])
        fa = pc.list_flatten(a["boxes"].combine_chunks())
        fb = pc.list_flatten(b["boxes"].combine_chunks())
        assert fa.field("category").equals(fb.field("category"))
        for k in ("x0", "y0", "x1", "y1", "score"):
            np.testing.assert_allclose(
                # float32 detector outputs computed in other processes (dask worker vs local): the conv
                # reductions may run in another order; 1e-5 of the image is far below a box moved by a bug
                fa.field(k).to_numpy(),
                fb.field(k).to_numpy(),
                rtol=1e-4,
                atol=1e-5,
            )


@pytest.mark.slow
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    root = tmp_path / "imgs"
    make_images(root, 1)
    (tmp_path / "caps.jsonl").write_text("{broken\n")
    (tmp_path / "typo.yaml").write_text("persn: a person\n")
    cases = [
        ["--weights", str(tmp_path / "missing.pt")],
        ["--weights", "yolov8n.yaml", "--phrase-map", str(tmp_path / "typo.yaml")],
        ["--weights", "yolov8n.yaml", "--captions", str(tmp_path / "caps.jsonl")],
        ["--weights", "yolov8n.yaml", "--conf", "1.5"],
    ]
    for extra in cases:
        r = subprocess.run(
            [*CLI, "label", "--images", str(root), "--out", str(tmp_path / "o"), *extra],
            check=False,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("groundset: error:") and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "o").exists() and not work_dir(tmp_path / "o").exists()


def test_label_and_ingest_yolo_name_one_file_with_one_id(tmp_path):
    """A folder labelled by the detector and the same folder read as YOLO txt get one id each.

    Merging both (curate) must see one image, not two: ids built differently by the two
    ingest paths would defeat curate's id check and leak duplicates.
    """
    from pipeline.stages.ingest.yolo import ingest_yolo

    root = tmp_path / "photos"
    make_images(root, 6)
    labels = tmp_path / "labels"
    labels.mkdir()
    names = tmp_path / "data.yaml"
    names.write_text("names: [thing]\n")
    label(root, tmp_path / "by_label", source="photos", **TINY)
    ingest_yolo(root, labels, names, tmp_path / "by_yolo", source="photos")
    ids = [
        sorted(read_dataset(tmp_path / d).records.column("image_id").to_pylist())
        for d in ("by_label", "by_yolo")
    ]
    assert ids[0] == ids[1] and len(ids[0]) == 6
