"""Tampered dataset directories: every rule of ``pipeline.core.validate``, every reader.

Users copy, edit and truncate dataset directories. Each case below breaks one rule of
a valid directory (two records parts, real writer) and checks that reading it is one
clear line naming the directory and, where there is one, the part and the row; then
every command that reads a dataset exits 2 on it with that one line and no traceback.
"""

from __future__ import annotations

import json
import shutil
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.core import dataset as dataset_module
from pipeline.core.dataset import read_dataset, write_dataset
from pipeline.core.errors import UserError
from pipeline.core.records import (
    BOX_FIELDS,
    OPTIONAL_BOX_FIELDS,
    assemble,
    reject_rows,
)
from pipeline.core.records import fill_optional as fill


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """Four images over two parts, one rejected box, real JPEGs under images/."""
    from PIL import Image

    root = tmp_path_factory.mktemp("valid")
    (root / "images").mkdir()
    for i in range(4):
        Image.new("RGB", (64, 48), (40 * i, 90, 200)).save(root / "images" / f"{i}.jpg")
    records = assemble(
        {
            "image_id": [f"s:{i}" for i in range(4)],
            "source": ["s"] * 4,
            "file": [f"{i}.jpg" for i in range(4)],
            "width": [64] * 4,
            "height": [48] * 4,
            "captions": [["a red square and a blue circle"]] * 4,
            "split": ["train"] * 4,
        },
        {
            "image_index": [0, 0, 1, 2, 3],
            "phrase": ["square", "circle"] * 2 + ["square"],
            "category": ["square", "circle"] * 2 + ["square"],
            "x0": [0.1, 0.5, 0.2, 0.3, 0.1],
            "y0": [0.1, 0.5, 0.2, 0.3, 0.1],
            "x1": [0.4, 0.9, 0.6, 0.7, 0.9],
            "y1": [0.4, 0.9, 0.6, 0.7, 0.9],
            "score": [1.0] * 5,
            "origin": ["coco"] * 5,
        },
    )
    rejects = reject_rows(
        stage="t", source="s", kind="box", image_id=["s:0"], reason="too_small", box_index=[2]
    )
    mp = pytest.MonkeyPatch()
    mp.setattr(dataset_module, "ROWS_PER_PART", 2)
    write_dataset(
        root / "ds",
        records,
        rejects,
        stage="ingest-coco",
        inputs=[],
        params={},
        images_in=4,
        boxes_in=6,
        sources={"s": {"images_root": str(root / "images")}},
    )
    mp.undo()
    assert len(list((root / "ds" / "records").iterdir())) == 2
    return root


def _rewrite_part(ds, change):
    part = ds / "records" / "part-00001.parquet"
    pq.write_table(change(pq.read_table(part)), part)


def _set_box(field, value):
    def change(t):
        rows = t.to_pylist()
        rows[0]["boxes"][0][field] = value
        return pa.Table.from_pylist(rows, schema=t.schema)

    return change


def _set_col(name, value):
    def change(t):
        return t.set_column(
            t.schema.get_field_index(name),
            name,
            pa.array([value] * t.num_rows, t.schema.field(name).type),
        )

    return change


def _set_crowd(x0, x1, area=None):
    def change(t):
        rows = t.to_pylist()
        box = dict(rows[0]["boxes"][0], x0=x0, x1=x1, area=area)
        rows[0]["crowd"] = [box]
        return pa.Table.from_pylist(rows, schema=t.schema)

    return change


def _older(t):
    """A part as written before the ``crowd`` column and the ``area``/``ann_id`` fields."""
    box = pa.struct([f for f in BOX_FIELDS if f.name not in OPTIONAL_BOX_FIELDS])
    rows = t.drop_columns(["crowd"]).to_pylist()
    for r in rows:
        r["boxes"] = [{k: v for k, v in b.items() if k in box.names} for b in r["boxes"]]
    schema = pa.schema([f for f in t.schema if f.name != "crowd"])
    schema = schema.set(schema.get_field_index("boxes"), pa.field("boxes", pa.list_(box)))
    return pa.Table.from_pylist(rows, schema=schema)


def _manifest(ds, change):
    m = json.loads((ds / "manifest.json").read_text())
    (ds / "manifest.json").write_text(json.dumps(change(m)))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# case -> (tampering of the dataset folder, words the one line must hold)
CASES = {
    "truncated part": (
        lambda d: _truncate(d / "records" / "part-00001.parquet"),
        "part-00001.parquet cannot be read",
    ),
    "truncated rejects": (lambda d: _truncate(d / "rejects.parquet"), "rejects.parquet"),
    "missing boxes column": (
        lambda d: _rewrite_part(d, lambda t: t.drop_columns(["boxes"])),
        "no column 'boxes'",
    ),
    "extra column": (
        lambda d: _rewrite_part(d, lambda t: t.append_column("note", pa.array(["x"] * t.num_rows))),
        "unexpected column 'note'",
    ),
    "string widths": (
        lambda d: _rewrite_part(
            d, lambda t: t.set_column(3, "width", pa.array(["64"] * t.num_rows))
        ),
        "'width' is string",
    ),
    "manifest not an object": (
        lambda d: (d / "manifest.json").write_text("[1, 2]"),
        "not a JSON object",
    ),
    "manifest truncated": (lambda d: _truncate(d / "manifest.json"), "manifest.json cannot"),
    "manifest deeply nested": (
        lambda d: (d / "manifest.json").write_text("[" * 100_000),
        "manifest.json cannot",
    ),
    "sources malformed": (lambda d: _manifest(d, lambda m: {**m, "sources": ["s"]}), "'sources'"),
    "counts do not add up": (
        lambda d: _manifest(d, lambda m: {**m, "counts": {**m["counts"], "images_in": 99}}),
        "do not add up",
    ),
    "NaN box": (lambda d: _rewrite_part(d, _set_box("x0", float("nan"))), "row 0"),
    "inverted box": (lambda d: _rewrite_part(d, _set_box("x1", 0.05)), "not a finite box"),
    "box outside the image": (lambda d: _rewrite_part(d, _set_box("y1", 1.5)), "1.5"),
    "NaN area": (lambda d: _rewrite_part(d, _set_box("area", float("nan"))), "area nan"),
    "negative area": (lambda d: _rewrite_part(d, _set_box("area", -3.0)), "area -3"),
    "inverted crowd region": (
        lambda d: _rewrite_part(d, _set_crowd(0.5, 0.2)),
        "crowd region 0 (0.5,",
    ),
    "crowd region with NaN area": (
        lambda d: _rewrite_part(d, _set_crowd(0.1, 0.2, float("nan"))),
        "crowd region 0 area nan",
    ),
    "zero size": (lambda d: _rewrite_part(d, _set_col("height", 0)), "height 0"),
    "missing part": (
        lambda d: (d / "records" / "part-00001.parquet").unlink(),
        "part-00001.parquet is missing",
    ),
    "unlisted part": (
        lambda d: shutil.copy(
            d / "records" / "part-00001.parquet", d / "records" / "part-00002.parquet"
        ),
        "part-00002.parquet is not listed",
    ),
    "absolute file": (
        lambda d: _rewrite_part(d, _set_col("file", "/etc/passwd")),
        "'/etc/passwd' is not a safe",
    ),
    "climbing file": (
        lambda d: _rewrite_part(d, _set_col("file", "../../secret.jpg")),
        "is not a safe",
    ),
    "NUL in file": (lambda d: _rewrite_part(d, _set_col("file", "a\x00.jpg")), "is not a safe"),
    "duplicate id": (lambda d: _rewrite_part(d, _set_col("image_id", "s:0")), "appears twice"),
    "rows edited out": (
        lambda d: _rewrite_part(d, lambda t: t.slice(0, 1)),
        "has 1 rows, manifest.json lists 2",
    ),
    "rejects of another run": (
        lambda d: pq.write_table(
            reject_rows(stage="t", source="s", kind="image", image_id=["s:9"], reason="bad"),
            d / "rejects.parquet",
        ),
        "rejects.parquet does not hold",
    ),
}


@pytest.fixture
def tampered(valid, tmp_path, request):
    case = request.param
    shutil.copytree(valid / "ds", tmp_path / "ds")
    CASES[case][0](tmp_path / "ds")
    return tmp_path / "ds", CASES[case][1]


def test_the_valid_directory_reads(valid):
    ds = read_dataset(valid / "ds")
    assert ds.records.num_rows == 4 and ds.rejects.num_rows == 1
    assert ds.image_path("s", "0.jpg") == valid / "images" / "0.jpg"
    raw = json.loads((valid / "ds" / "manifest.json").read_text())
    assert raw["sources"]["s"]["images_root"] == "../images"  # relative: a moved repo works
    assert "created" not in raw


@pytest.mark.parametrize("tampered", sorted(CASES), indirect=True)
def test_each_rule_is_one_line_naming_the_directory(tampered):
    ds, words = tampered
    with pytest.raises(UserError) as e:
        read_dataset(ds)
    line = str(e.value)
    assert "\n" not in line and str(ds) in line and words in line, line


def test_pandas_edits_that_lose_nothing_still_read(valid, tmp_path):
    shutil.copytree(valid / "ds", tmp_path / "ds")
    part = tmp_path / "ds" / "records" / "part-00000.parquet"
    t = pq.read_table(part)
    widened = t.set_column(3, "width", t.column("width").cast(pa.int64()))
    pq.write_table(
        widened.set_column(1, "source", t.column("source").cast(pa.large_string())), part
    )
    assert read_dataset(tmp_path / "ds").records.column("width").type == pa.int32()


def test_a_directory_written_before_crowd_area_and_ann_id_reads(valid, tmp_path):
    """Parts without the optional column and box fields read as nulls, with every check."""
    shutil.copytree(valid / "ds", tmp_path / "ds")
    for part in (tmp_path / "ds" / "records").iterdir():
        pq.write_table(_older(pq.read_table(part)), part)
    assert "crowd" not in pq.read_schema(part).names
    assert read_dataset(tmp_path / "ds").records.equals(read_dataset(valid / "ds").records)
    coords = dataset_module.BOX_COORDS
    assert read_dataset(tmp_path / "ds", ["image_id", "boxes"], coords).records.equals(
        read_dataset(valid / "ds", ["image_id", "boxes"], coords).records
    )
    _rewrite_part(tmp_path / "ds", lambda t: _older(_set_box("x0", float("nan"))(fill(t))))
    with pytest.raises(UserError, match="row 0"):
        read_dataset(tmp_path / "ds")


READERS = {  # command line over a dataset directory D (a tiny model M where it needs one)
    "curate": lambda d, m, o: ["curate", d, "--out", o],
    "audit": lambda d, m, o: ["audit", d, "--out", o],
    "export coco": lambda d, m, o: ["export", "coco", d, "--out", o],
    "export yolo": lambda d, m, o: ["export", "yolo", d, "--out", o],
    "export gligen-tsv": lambda d, m, o: ["export", "gligen-tsv", d, "--out", f"{o}.tsv"],
    "encode": lambda d, m, o: ["encode", d, "--model", m, "--out", o],
    "train": lambda d, m, o: ["train", "--model", m, "--data", d, "--out", o, "--steps", "1"],
    "sample": lambda d, m, o: ["sample", "--model", m, "--layouts", d, "--out", o],
}


@pytest.mark.parametrize(
    "tampered",
    [
        "truncated part",
        "NaN box",
        "missing part",
        "absolute file",
        "manifest not an object",
        "manifest deeply nested",
    ],
    indirect=True,
)
@pytest.mark.parametrize("command", sorted(READERS))
def test_every_reader_exits_2_with_one_line(
    command, tampered, tiny_model, tmp_path, monkeypatch, capsys
):
    ds, words = tampered
    args = READERS[command](ds, tiny_model, tmp_path / "out")
    monkeypatch.setattr(sys, "argv", ["groundset", "--quiet", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and words in err[0], err
    assert not (tmp_path / "out").exists()  # a run that failed leaves no folder behind


def test_a_run_that_keeps_nothing_is_refused_with_its_reasons(tmp_path):
    from pipeline.core.records import RECORD_SCHEMA

    rejects = reject_rows(
        stage="t",
        source="s",
        kind="image",
        image_id=["s:1", "s:2", "s:3"],
        reason=["file_missing", "file_missing", "unsafe_file_name"],
    )
    with pytest.raises(
        UserError,
        match=r"kept none of the 3 input images \(2 file_missing, "
        r"1 unsafe_file_name\)",
    ):
        write_dataset(
            tmp_path / "out",
            RECORD_SCHEMA.empty_table(),
            rejects,
            stage="t",
            inputs=[],
            params={},
            images_in=3,
            boxes_in=0,
        )
    assert not (tmp_path / "out").exists()
    write_dataset(
        tmp_path / "empty",
        RECORD_SCHEMA.empty_table(),
        None,
        stage="t",
        inputs=[],
        params={},
        images_in=0,
        boxes_in=0,
    )  # an empty input is not a loss
