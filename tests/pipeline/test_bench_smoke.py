"""The benchmarks whose figures the README quotes still run, from a fresh clone, end to end.

A benchmark that silently broke (a renamed function, a changed CLI option) would leave
the README quoting figures nobody can reproduce. These run each script the way a user
does, as a process, at the smallest sizes: they check that it runs and that its JSON
holds a result for both contenders, not the figures themselves.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.parametrize("script", ["ingest.py", "label.py", "sample.py"])
def test_bench_help_runs_without_data(script):
    proc = _run(script, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


@pytest.mark.slow
def test_sample_bench_times_both_processes(tmp_path):
    out = tmp_path / "sample.json"
    args = ["--n", "2", "--batch", "2", "--steps", "2", "--repeats", "1", "--inproc-repeats", "1"]
    proc = _run("sample.py", *args, "--work", str(tmp_path / "w"), "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    methods = res["processes"]["methods"]
    assert len(methods) == 2
    for m in methods.values():
        assert m["median_wall_s"] > 0 and m["median_cpu_s"] > 0 and m["peak_rss_mib"] > 0
    assert len(list((tmp_path / "w" / "baseline-images").glob("*.png"))) == 2
    manifest = json.loads((tmp_path / "w" / "groundset-out" / "manifest.json").read_text())
    assert manifest["counts"]["images_kept"] == 2
    assert res["in_process"]["speedup"] > 0


@pytest.mark.slow
def test_label_bench_times_both_processes(tmp_path, shared_data):
    images = tmp_path / "images"
    images.mkdir()
    for f in sorted((shared_data / "coco128/images/val2017").glob("*.jpg"))[:2]:
        shutil.copy(f, images / f.name)
    out = tmp_path / "label.json"
    args = ["--images", str(images), "--repeats", "1", "--no-scaling", "--inproc-n", "2"]
    args += ["--inproc-repeats", "1", "--work", str(tmp_path / "w"), "--json", str(out)]
    proc = _run("label.py", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["processes"]["images"] == 2
    assert len(res["processes"]["methods"]) == 2
    manifest = json.loads((tmp_path / "w" / "groundset" / "manifest.json").read_text())
    assert manifest["counts"]["images_kept"] == 2
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "w" / "baseline.parquet").num_rows == 2
