"""Malformed input for ``groundset ingest``: every reject reason and every file-level error.

File-level errors go through the real CLI entry point (``pipeline.cli.main``) and must
give exit code 2 and one stderr line without a traceback. Record-level faults must become
reject rows with the right reason while every good record still goes through.
"""

import json
import subprocess
import sys

import pytest

from pipeline.cli import main
from pipeline.core.dataset import read_dataset
from pipeline.stages.ingest.coco import ingest_coco

CATS = [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}]


def run_cli(args, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["groundset", "--quiet", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    code = e.value.code
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code, err):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("groundset: error: "), err
    assert "Traceback" not in err


def write(path, text):
    path.write_text(text if isinstance(text, str) else json.dumps(text))
    return path


def coco(images, annotations, categories=CATS):
    return {"images": images, "annotations": annotations, "categories": categories}


def img(i, w=100, h=100, file=None, **kw):
    return {
        "id": i,
        "file_name": file if file is not None else f"{i}.jpg",
        "width": w,
        "height": h,
        **kw,
    }


def ann(i, image_id, bbox, cat=1, crowd=0):
    return {
        "id": i,
        "image_id": image_id,
        "category_id": cat,
        "bbox": bbox,
        "iscrowd": crowd,
        "segmentation": [[0, 0, 1, 1, 2, 2]],
        "area": 1.0,
    }


FILE_ERRORS = {
    "empty": "",
    "whitespace": "  \n\t ",
    "not_json": "this is not json",
    "truncated": json.dumps(coco([img(1)], [ann(1, 1, [1, 1, 5, 5])]))[:-25],
    "top_level_array": "[]",
    "top_level_number": "3",
    "missing_images": json.dumps({"annotations": [], "categories": CATS}),
    "missing_categories": json.dumps({"images": [img(1)], "annotations": []}),
    "images_not_a_list": json.dumps({"images": {"id": 1}, "categories": CATS}),
    "image_not_an_object": json.dumps({"images": [7], "categories": CATS}),
    "annotations_not_a_list": json.dumps({"images": [], "annotations": 5, "categories": CATS}),
    "category_without_name": json.dumps({"images": [], "categories": [{"id": 1}]}),
    "category_id_not_int": json.dumps({"images": [], "categories": [{"id": "x", "name": "a"}]}),
    "duplicate_category_id": json.dumps(
        {"images": [], "categories": CATS + [{"id": 1, "name": "x"}]}
    ),
    "nan_but_truncated": '{"images": [{"id": 1, "width": NaN',
}


@pytest.mark.parametrize("case", sorted(FILE_ERRORS))
def test_file_level_errors_exit_2_with_one_line(case, tmp_path, capsys, monkeypatch):
    f = write(tmp_path / "instances.json", FILE_ERRORS[case])
    code, _, err = run_cli(
        ["ingest", "coco", "--instances", f, "--out", tmp_path / "out"], capsys, monkeypatch
    )
    assert_one_line_error(code, err)
    assert str(f) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "case",
    [
        "missing_file",
        "bad_source",
        "images_root_not_dir",
        "captions_not_json",
        "captions_wrong_shape",
        "captions_missing",
        "out_under_a_file",
    ],
)
def test_option_and_captions_errors(case, tmp_path, capsys, monkeypatch):
    good = write(tmp_path / "instances.json", coco([img(1)], []))
    args = ["ingest", "coco", "--instances", good, "--out", tmp_path / "out"]
    if case == "missing_file":
        args[3] = tmp_path / "nope.json"
    elif case == "bad_source":
        args += ["--source", "a:b"]
    elif case == "images_root_not_dir":
        args += ["--images-root", tmp_path / "nowhere"]
    elif case == "captions_not_json":
        args += ["--captions", write(tmp_path / "c.json", "{oops")]
    elif case == "captions_wrong_shape":
        args += ["--captions", write(tmp_path / "c.json", {"images": []})]
    elif case == "out_under_a_file":
        args[5] = write(tmp_path / "plain_file", "x") / "out"
    else:
        args += ["--captions", tmp_path / "missing_captions.json"]
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert_one_line_error(code, err)


def test_the_installed_entry_point_prints_one_line(tmp_path):
    """The same contract through a real subprocess (no in-process shortcuts)."""
    f = write(tmp_path / "instances.json", '{"images": [{"id": 1')
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "ingest",
            "coco",
            "--instances",
            str(f),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert_one_line_error(r.returncode, r.stderr)
    assert "truncated" in r.stderr


# One file holding every record-level fault next to good records.
IMAGES = [
    img(1),  # good
    img(1, file="again.jpg"),  # duplicate_image_id
    {"id": 3, "file_name": "3.jpg", "height": 100},  # width missing
    img(4, h=0),  # non-positive height
    img(5, w="640"),  # width of the wrong type
    img(6, w=-5),  # negative width
    img(7, file="../escape.jpg"),  # unsafe_file_name
    img(8, file="/abs/path.jpg"),  # unsafe_file_name
    img(9, file="nul\x00.jpg"),  # unsafe_file_name
    {"id": "abc", "file_name": "s.jpg", "width": 10, "height": 10},  # bad_image_id
    img(11, w=200.0, h=50),  # good: integral float width, no boxes
]
ANNS = [
    ann(1, 1, [10, 10, 20, 20]),  # good
    ann(2, 1, [10, 10, 20, 20], crowd=1),  # crowd
    ann(3, 1, [10, 10, 0, 20]),  # zero_area (w = 0)
    ann(4, 1, [10, 10, -5, 20]),  # zero_area (negative width)
    ann(5, 1, [150, 10, 20, 20]),  # outside_image
    ann(6, 999, [1, 1, 5, 5]),  # unknown_image_id
    ann(7, 1, [1, 1, 5, 5], cat=42),  # unknown_category_id
    ann(1, 1, [1, 1, 5, 5]),  # duplicate_annotation_id
    ann(9, 1, ["a", 1, 2, 3]),  # non_numeric_coordinates
    ann(10, 1, [1, 2, 3]),  # non_numeric_coordinates (3 numbers)
    {"id": 11, "image_id": 1, "category_id": 1},  # non_numeric_coordinates (no bbox)
    ann(12, 7, [1, 1, 5, 5]),  # parent_image_rejected (unsafe name)
    ann(13, 3, [1, 1, 5, 5]),  # parent_image_rejected (no width)
    {"id": None, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},  # bad_annotation_id
    ann(15, 1, [90, 90, 50, 50]),  # good, clipped to the image
    ann(16, "1", [1, 1, 5, 5]),  # unknown_image_id (a string id)
    ann(17, 1, [1, 1, 5, 5], cat=None),  # unknown_category_id (null)
    ann(18, 1, [True, 1, 5, 5]),  # non_numeric_coordinates (bool)
]
WANT_IMAGES = {
    "duplicate_image_id": 1,
    "missing_or_bad_size": 4,
    "unsafe_file_name": 3,
    "bad_image_id": 1,
}
WANT_BOXES = {
    "crowd": 1,
    "zero_area": 2,
    "outside_image": 1,
    "unknown_image_id": 2,
    "unknown_category_id": 2,
    "duplicate_annotation_id": 1,
    "non_numeric_coordinates": 4,
    "parent_image_rejected": 2,
    "bad_annotation_id": 1,
}


def test_every_record_fault_is_rejected_with_its_reason(tmp_path, capsys, monkeypatch):
    f = write(tmp_path / "instances.json", coco(IMAGES, ANNS))
    code, _, err = run_cli(
        ["ingest", "coco", "--instances", f, "--out", tmp_path / "d"], capsys, monkeypatch
    )
    assert code in (0, None), err
    ds = read_dataset(tmp_path / "d")
    c = ds.manifest["counts"]
    assert c["images_rejected"] == WANT_IMAGES
    assert c["boxes_rejected"] == WANT_BOXES
    assert c["images_in"] == len(IMAGES) == c["images_kept"] + sum(c["images_rejected"].values())
    assert c["boxes_in"] == len(ANNS) == c["boxes_kept"] + sum(c["boxes_rejected"].values())
    rows = ds.records.to_pylist()
    assert [r["image_id"] for r in rows] == ["instances:1", "instances:11"]
    assert rows[1]["width"] == 200 and rows[1]["boxes"] == []
    kept = rows[0]["boxes"]
    assert [b["category"] for b in kept] == ["dog", "dog"]
    # float32 storage of 0.1, 0.3: pytest.approx's rtol 1e-6 is above float32's 6e-8
    assert kept[0]["x0"] == pytest.approx(0.1) and kept[0]["x1"] == pytest.approx(0.3)
    assert (kept[1]["x0"], kept[1]["x1"], kept[1]["y1"]) == pytest.approx((0.9, 1.0, 1.0))
    rej = ds.rejects.to_pylist()
    by_index = {r["box_index"]: r for r in rej if r["kind"] == "box"}
    assert by_index[5]["image_id"] == "instances:999" and by_index[5]["file"] is None
    assert by_index[11]["file"] == "../escape.jpg"
    assert "'a'" in by_index[8]["detail"]
    images = {r["file"]: r["reason"] for r in rej if r["kind"] == "image"}
    assert (
        images["again.jpg"] == "duplicate_image_id"
        and images["/abs/path.jpg"] == "unsafe_file_name"
    )


def test_non_standard_json_numbers_reject_only_their_boxes(tmp_path):
    """Python's json.dump writes NaN/Infinity; those boxes are rejected, the rest kept."""
    text = json.dumps(
        coco(
            [img(1), img(2, w=float("nan"))],
            [
                ann(1, 1, [1, 1, 5, 5]),
                ann(2, 1, [float("nan"), 1, 5, 5]),
                ann(3, 1, [1, 1, float("inf"), 5]),
                ann(4, 2, [1, 1, 5, 5]),
            ],
        )
    )
    assert "NaN" in text and "Infinity" in text
    m = ingest_coco(write(tmp_path / "i.json", text), tmp_path / "d", source="s")
    assert m["counts"]["boxes_rejected"] == {
        "non_numeric_coordinates": 2,
        "parent_image_rejected": 1,
    }
    assert m["counts"]["images_rejected"] == {"missing_or_bad_size": 1}
    assert m["counts"]["boxes_kept"] == 1


def test_out_of_range_number_is_a_reject_not_a_crash(tmp_path):
    text = json.dumps(coco([img(1)], [ann(1, 1, [1, 1, 5, 5]), ann(2, 1, [1, 1, 5, 5])]))
    text = text.replace('"bbox": [1, 1, 5, 5]', '"bbox": [1e999, 1, 5, 5]', 1)
    assert "1e999" in text
    m = ingest_coco(write(tmp_path / "i.json", text), tmp_path / "d", source="s")
    assert m["counts"]["boxes_rejected"] == {"non_numeric_coordinates": 1}


def test_integers_beyond_any_range_are_rejects(tmp_path):
    huge = 10**400
    text = json.dumps(
        coco(
            [img(1), img(2, w=huge), img(huge)],
            [ann(1, 1, [1, 1, 5, 5]), ann(2, 1, [huge, 1, 5, 5]), ann(huge, 1, [1, 1, 5, 5])],
        )
    )
    m = ingest_coco(write(tmp_path / "i.json", text), tmp_path / "d", source="s")
    assert m["counts"]["images_rejected"] == {"missing_or_bad_size": 1, "bad_image_id": 1}
    assert m["counts"]["boxes_rejected"] == {"non_numeric_coordinates": 1, "bad_annotation_id": 1}


def test_one_bad_record_does_not_change_the_others(tmp_path):
    """A wrong type sends the file down the loose decoder; every other record must come
    out exactly as from the clean file through the strict decoder."""
    images = [img(i, w=50 + i, h=40 + i) for i in range(1, 30)]
    anns = [
        ann(i, 1 + i % 29, [i % 7, i % 5, 3 + i % 11, 2 + i % 13], cat=1 + i % 2)
        for i in range(1, 200)
    ]
    clean = ingest_coco(write(tmp_path / "a.json", coco(images, anns)), tmp_path / "a", source="s")
    bad = coco(images, anns + [{"id": 500, "image_id": 3, "category_id": 1, "bbox": "x"}])
    dirty = ingest_coco(write(tmp_path / "b.json", bad), tmp_path / "b", source="s")
    assert dirty["counts"]["boxes_rejected"] == {"non_numeric_coordinates": 1}
    assert clean["counts"]["boxes_kept"] == dirty["counts"]["boxes_kept"] == 199
    assert read_dataset(tmp_path / "a").records.equals(read_dataset(tmp_path / "b").records)


def test_captions_with_bad_entries_are_counted(tmp_path):
    inst = write(tmp_path / "i.json", coco([img(1), img(2)], []))
    caps = write(
        tmp_path / "c.json",
        {
            "type": "captions",
            "images": [],
            "annotations": [
                {"image_id": 1, "id": 1, "caption": " A dog. \n"},
                {"image_id": 1, "id": 2, "caption": 5},
                {"image_id": "1", "id": 3, "caption": "string id"},
                {"image_id": 77, "id": 4, "caption": "no such image"},
                {"image_id": 2, "id": 5, "caption": "A cat."},
                {"image_id": 2, "id": 6, "caption": "a cat " * 2000},  # over the limit
            ],
        },
    )
    m = ingest_coco(inst, tmp_path / "d", captions=caps, source="s")
    assert m["captions"] == {
        "captions_in": 6,
        "captions_joined": 2,
        "captions_bad": 3,
        "captions_too_long": 1,
        "captions_unmatched": 1,
    }
    rows = read_dataset(tmp_path / "d").records.to_pylist()
    assert [r["captions"] for r in rows] == [["A dog."], ["A cat."]]
