"""`groundset audit`: gate verdicts, exit codes, remediation accounting, dask path."""

import json
import shutil
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis.calibration import concat, lattice, mosaics, synthetic_natural, to_records
from pipeline.cli import main
from pipeline.core.dataset import n_boxes, read_dataset, write_dataset
from pipeline.core.records import PARENT_IMAGE_REJECTED
from pipeline.stages.audit import run_audit


def _write(path, layouts, source):
    rec = to_records(layouts, source)
    write_dataset(
        path,
        rec,
        None,
        stage="test",
        inputs=[],
        params={},
        images_in=rec.num_rows,
        boxes_in=n_boxes(rec),
    )
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("audit")
    nat = synthetic_natural(300, 41)
    clean = _write(d / "clean", nat, "natural")
    grid = concat([lattice(25, 42), mosaics(25, 43, synthetic_natural(60, 44))])
    dirty = d / "dirty"
    rec = to_records(concat([nat, grid]), "mixed")
    write_dataset(
        dirty,
        rec,
        None,
        stage="test",
        inputs=[],
        params={},
        images_in=rec.num_rows,
        boxes_in=n_boxes(rec),
    )
    ref = _write(d / "ref", synthetic_natural(300, 45), "reference")
    return {"root": d, "clean": clean, "dirty": dirty, "ref": ref}


def _cli(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["groundset", "--quiet", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code


def test_clean_data_passes_with_exit_0_and_writes_all_outputs(data, tmp_path, monkeypatch):
    code = _cli(monkeypatch, "audit", data["clean"], "--reference", data["ref"], "--out", tmp_path)
    assert code in (0, None)
    result = json.loads((tmp_path / "audit.json").read_text())
    assert result["verdict"] == "pass"
    df = pd.read_parquet(tmp_path / "layout_stats.parquet")
    assert len(df) == 300 and {
        "image_id",
        "source",
        "n_boxes",
        "grid_score",
        "low_evidence",
        "seam_x",
        "clark_evans",
    } <= set(df.columns)
    assert (tmp_path / "report.html").stat().st_size > 1000
    assert result["comparison"]["ks"]["pvalue"] > 0.001


def test_contaminated_data_fails_with_exit_3(data, tmp_path, monkeypatch, capsys):
    code = _cli(monkeypatch, "audit", data["dirty"], "--reference", data["ref"], "--out", tmp_path)
    assert code == 3
    assert "audit gate failed" in capsys.readouterr().err
    result = json.loads((tmp_path / "audit.json").read_text())
    assert result["verdict"] == "fail" and result["failing_sources"] == ["mixed"]
    assert result["grid_share"]["overall"]["share"] > result["reference"]["grid_share"] + 0.05
    assert result["worst_images"] and result["worst_images"][0]["grid_score"] >= 0.6


def test_a_looser_max_share_lets_the_same_data_pass(data, tmp_path):
    r = run_audit(data["dirty"], tmp_path, reference=data["ref"], max_grid_share=0.5, report=False)
    assert r["verdict"] == "pass"


def test_filter_removes_grid_like_images_with_exact_accounting(data, tmp_path, monkeypatch):
    out = tmp_path / "filtered"
    code = _cli(
        monkeypatch,
        "audit",
        data["dirty"],
        "--reference",
        data["ref"],
        "--out",
        tmp_path / "a",
        "--remediate",
        "filter",
        "--remediated-out",
        out,
    )
    assert code in (0, None)  # the remediated data passes, so training may go on
    before = read_dataset(data["dirty"])
    after = read_dataset(out)
    stats = pd.read_parquet(tmp_path / "a" / "layout_stats.parquet")
    flagged = set(stats.loc[(stats.grid_score >= 0.6) & ~stats.low_evidence, "image_id"])
    c = after.manifest["counts"]
    assert c["images_rejected"] == {"grid_like": len(flagged)}
    assert c["images_in"] == before.records.num_rows == c["images_kept"] + len(flagged)
    lost = stats.loc[stats.image_id.isin(flagged), "n_boxes"].sum()
    assert c["boxes_rejected"] == {PARENT_IMAGE_REJECTED: int(lost)}
    assert not flagged & set(after.records.column("image_id").to_pylist())
    rej = after.rejects.to_pandas()
    assert set(rej.loc[rej.kind == "image", "image_id"]) == flagged
    audit = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert audit["verdict"] == "fail" and audit["remediation"]["verdict_after"] == "pass"


def test_downweight_writes_weights_the_trainer_can_read(data, tmp_path):
    out = tmp_path / "audit"
    r = run_audit(
        data["dirty"],
        out,
        reference=data["ref"],
        remediate="downweight",
        remediated_out=tmp_path / "weighted",
        report=False,
    )
    w = pq.read_table(out / "weights.parquet").to_pandas()
    stats = pd.read_parquet(out / "layout_stats.parquet")
    flagged = (stats.grid_score >= 0.6) & ~stats.low_evidence
    assert len(w) == len(stats) and (w.image_id == stats.image_id).all()
    assert (w.weight[flagged] < 1).all() and (w.weight[~flagged] == 1).all()
    assert r["final_verdict"] == "pass"
    assert (tmp_path / "weighted" / "weights.parquet").is_file()
    from trainer.data import read_weights

    got = read_weights(out / "weights.parquet", stats.image_id.to_numpy())
    # float64 weights written to Parquet and read back: exact, default rtol 1e-7
    np.testing.assert_allclose(got, w.weight)


def test_dask_scheduler_gives_the_same_stats(data, tmp_path):
    run_audit(data["dirty"], tmp_path / "a", reference=data["ref"], report=False)
    run_audit(
        data["dirty"], tmp_path / "b", reference=data["ref"], report=False, scheduler="threads"
    )
    a = pd.read_parquet(tmp_path / "a" / "layout_stats.parquet")
    b = pd.read_parquet(tmp_path / "b" / "layout_stats.parquet")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--remediate", "bogus"], "--remediate must be one of"),
        (["--remediate", "filter"], "needs --remediated-out"),
        (["--max-grid-share", "2"], "must lie in [0, 1]"),
        (["--scheduler", "nonsense"], "--scheduler must be"),
    ],
)
def test_bad_options_exit_2_with_one_line(data, tmp_path, monkeypatch, capsys, args, needle):
    code = _cli(monkeypatch, "audit", data["clean"], "--out", tmp_path, *args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0]


def test_missing_dataset_exits_2(tmp_path, monkeypatch, capsys):
    assert _cli(monkeypatch, "audit", tmp_path / "nope", "--out", tmp_path / "o") == 2
    assert "not a groundset dataset" in capsys.readouterr().err


def test_remediate_none_with_an_output_writes_a_pass_through_copy(data, tmp_path):
    r = run_audit(
        data["clean"],
        tmp_path / "a",
        reference=data["ref"],
        remediated_out=tmp_path / "copy",
        report=False,
    )
    assert r["final_verdict"] == "pass"
    copy = read_dataset(tmp_path / "copy")
    orig = read_dataset(data["clean"])
    assert (
        copy.records.column("image_id").to_pylist() == orig.records.column("image_id").to_pylist()
    )
    assert copy.manifest["counts"]["images_rejected"] == {}


def test_a_failed_gate_leaves_no_data_where_training_looks(data, tmp_path, monkeypatch):
    audited = tmp_path / "audited"
    code = _cli(
        monkeypatch,
        "audit",
        data["clean"],
        "--reference",
        data["ref"],
        "--out",
        tmp_path / "a",
        "--remediated-out",
        audited,
    )
    assert code in (0, None) and read_dataset(audited).records.num_rows == 300
    # the same pipeline on grid-like data: the gate fails, and the earlier pass-through is gone
    code = _cli(
        monkeypatch,
        "audit",
        data["dirty"],
        "--reference",
        data["ref"],
        "--out",
        tmp_path / "b",
        "--remediated-out",
        audited,
    )
    assert code == 3 and not audited.exists()
    result = json.loads((tmp_path / "b" / "audit.json").read_text())
    assert result["final_verdict"] == "fail" and result["remediation"]["out"] is None


def test_dvc_metrics_get_a_compact_summary(data, tmp_path, monkeypatch):
    """dvc metrics show printed 303 columns from audit.json and metrics.json; the metrics
    file DVC lists now holds only the headline numbers."""
    code = _cli(
        monkeypatch,
        "audit",
        data["dirty"],
        "--reference",
        data["ref"],
        "--out",
        tmp_path / "a",
        "--remediate",
        "filter",
        "--remediated-out",
        tmp_path / "f",
    )
    assert code in (0, None)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    full = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert summary["verdict"] == full["verdict"] == "fail" and summary["final_verdict"] == "pass"
    assert summary["grid_like_share"] == full["grid_share"]["overall"]["share"]
    assert summary["images_removed"] == full["remediation"]["images_removed"] > 0

    def leaves(x):
        return sum(map(leaves, x.values())) if isinstance(x, dict) else 1

    assert leaves(summary) <= 12 < leaves(full)


def test_evaluate_headline_keeps_the_compared_numbers():
    from pipeline.stages.evaluate import REAL, UNTRAINED, headline

    run = {
        "ap50": 0.5,
        "ap": 0.2,
        "tiling_score": float("nan"),
        "tiling_share": 0.0,
        "grid_share": 0.1,
        "n_detections": 7,
        "unscorable_by_category": {"x": 1},
    }
    h = headline({"n_layouts": 4, "runs": {"beta=1": run, UNTRAINED: run, REAL: run}})
    assert set(h) == {"n_layouts", "beta_1", "closed_gates", "real"}
    assert h["beta_1"] == {
        "ap50": 0.5,
        "ap": 0.2,
        "tiling_score": None,
        "tiling_share": 0.0,
        "grid_share": 0.1,
    }


def test_the_fast_path_gives_the_old_paths_stats_and_verdict(data, tmp_path):
    """One read of the coordinates only, Arrow-written stats: the same numbers as layout
    stats of the fully read records (the old path) and the same audit.json."""
    from analysis.audit import gate, reference_from_stats
    from analysis.layout_stats import layout_stats

    result = run_audit(data["dirty"], tmp_path, reference=data["ref"])
    old = layout_stats(read_dataset(data["dirty"]).records)
    new = pd.read_parquet(tmp_path / "layout_stats.parquet")
    pd.testing.assert_frame_equal(new, old)
    ref = reference_from_stats(layout_stats(read_dataset(data["ref"]).records), data["ref"].name)
    expect = json.loads(json.dumps(gate(old, ref)))
    got = json.loads((tmp_path / "audit.json").read_text())
    assert {k: got[k] for k in expect} == expect
    assert result["worst_images"] == expect["worst_images"]


def test_a_non_finite_box_is_still_refused_when_only_coordinates_are_read(
    tmp_path, monkeypatch, capsys
):
    lay = synthetic_natural(30, 3)
    lay.x0[5] = np.nan
    bad = _write(tmp_path / "bad", lay, "s")
    with pytest.raises(Exception, match="is not a finite box") as full:
        read_dataset(bad)
    code = _cli(monkeypatch, "audit", bad, "--out", tmp_path / "out")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(full.value) in err[0]


def test_streaming_by_part_gives_the_scores_and_report_of_one_pass(tmp_path, monkeypatch):
    """Scores by records part = scores in one go: the same stats file, audit.json and
    report figures (byte for byte) from a dataset written as one part or as many."""
    import re

    from pipeline.core import dataset as ds_mod

    lay = concat(
        [synthetic_natural(200, 51), lattice(30, 52), mosaics(20, 53, synthetic_natural(40, 54))]
    )
    one = _write(tmp_path / "one", lay, "s")
    monkeypatch.setattr(ds_mod, "ROWS_PER_PART", 37)
    many = _write(tmp_path / "many", lay, "s")
    assert len(list((many / "records").glob("part-*.parquet"))) == 7
    # an older manifest that lists no parts (rows unknown up front): the same again
    listed = tmp_path / "listed"
    shutil.copytree(many, listed)
    manifest = json.loads((listed / "manifest.json").read_text())
    del manifest["parts"]
    (listed / "manifest.json").write_text(json.dumps(manifest))
    outs = {}
    for name, path in (("one", one), ("many", many), ("listed", listed)):
        run_audit(path, tmp_path / f"{name}-out")
        out = tmp_path / f"{name}-out"
        result = json.loads((out / "audit.json").read_text())
        result.pop("dataset")
        pngs = re.findall(r"base64,([A-Za-z0-9+/=]+)", (out / "report.html").read_text())
        outs[name] = (pd.read_parquet(out / "layout_stats.parquet"), result, pngs)
    for other in ("many", "listed"):
        pd.testing.assert_frame_equal(outs["one"][0], outs[other][0])
        assert outs["one"][1] == outs[other][1] and outs["one"][1]["worst_images"]
        assert len(outs["one"][2]) == 4 and outs["one"][2] == outs[other][2]


def test_streaming_still_refuses_an_id_repeated_in_another_part(tmp_path, monkeypatch, capsys):
    import pyarrow as pa

    from pipeline.core import dataset as ds_mod

    rec = to_records(synthetic_natural(40, 61), "s")
    rec = pa.concat_tables([rec, rec.slice(3, 1)])  # image s:3 again, in the last part
    monkeypatch.setattr(ds_mod, "ROWS_PER_PART", 16)
    write_dataset(
        tmp_path / "d",
        rec,
        None,
        stage="test",
        inputs=[],
        params={},
        images_in=rec.num_rows,
        boxes_in=n_boxes(rec),
    )
    code = _cli(monkeypatch, "audit", tmp_path / "d", "--out", tmp_path / "out")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "records/part-00002.parquet row 8: image_id 's:3' appears twice" in err[0]
    assert not (tmp_path / "out").exists()
