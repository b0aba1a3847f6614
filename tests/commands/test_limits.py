"""Resource limits (docs/limits.md): what is over them is one line or a counted reject.

The inputs the issue found failing: one image with 100,000 boxes (the audit died with
MemoryError, ``export gligen-tsv`` peaked at 5.7 GB), an image declared 2 GB, a 1 MB
caption and deeply nested JSON or YAML. Each now gets a counted reject at ingest or
one line and exit 2 from every command that reads it, within a bounded memory.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.core import defaults
from pipeline.core.dataset import read_dataset
from pipeline.stages.ingest.coco import ingest_coco
from pipeline.stages.ingest.yolo import ingest_yolo
from tests.dataset_factory import make_dataset, write_jpeg

DEEP = 100_000  # levels: far past Python's recursion limit (1,000) and msgspec's
MEGA_CAPTION = "a dog on a sofa " * 65_536  # 1 MiB


def run_cli(args, monkeypatch, capsys) -> tuple[int, list[str]]:
    monkeypatch.setattr(sys, "argv", ["groundset", "--quiet", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def over(tmp_path_factory):
    """Dataset directories written past ingest (by hand, as a user could), one per limit,
    each with one normal image beside the one over the limit."""
    root = tmp_path_factory.mktemp("over")
    write_jpeg(root / "images" / "a.jpg", 64, 48, 0)
    write_jpeg(root / "images" / "b.jpg", 64, 48, 1)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 0.9, (2, 100_000))
    many = [{"image": 0, "xyxy": (a, b, a + 0.05, b + 0.05)} for a, b in zip(x, y)]
    one = [{"image": 0, "xyxy": (0.1, 0.1, 0.5, 0.5)}, {"image": 1, "xyxy": (0.2, 0.2, 0.6, 0.6)}]
    normal = {"id": 2, "file": "b.jpg", "captions": ["a dog"]}
    cases = {
        "100,000 boxes": ([{"id": 1, "file": "a.jpg", "captions": ["dogs"]}, normal], many),
        "2 GB image": (
            [{"id": 1, "file": "a.jpg", "width": 50_000, "height": 40_000}, normal],
            one,
        ),
        "1 MB caption": ([{"id": 1, "file": "a.jpg", "captions": [MEGA_CAPTION]}, normal], one),
    }
    for name, (images, boxes) in cases.items():
        make_dataset(root / name, "s", images, boxes, images_root=root / "images")
    return root


WORDS = {
    "100,000 boxes": "100000 boxes, over the limit of 2000",
    "2 GB image": "size 50000x40000, over the limit",
    "1 MB caption": "a caption over the limit of 10000 characters",
}

READERS = {
    "audit": lambda d, o: ["audit", d, "--out", o],
    "curate": lambda d, o: ["curate", d, "--out", o],
    "export gligen-tsv": lambda d, o: ["export", "gligen-tsv", d, "--out", f"{o}.tsv"],
    "export coco": lambda d, o: ["export", "coco", d, "--out", o],
    "export yolo": lambda d, o: ["export", "yolo", d, "--out", o],
}


@pytest.mark.parametrize("case", sorted(WORDS))
@pytest.mark.parametrize("command", sorted(READERS))
def test_a_dataset_over_a_limit_is_one_line(case, command, over, tmp_path, monkeypatch, capsys):
    if command == "audit" and case != "100,000 boxes":
        pytest.skip("the audit reads box coordinates only: sizes and captions are not its load")
    code, err = run_cli(READERS[command](over / case, tmp_path / "out"), monkeypatch, capsys)
    assert code == 2 and len(err) == 1, err
    assert WORDS[case] in err[0] and "docs/limits.md" in err[0] and "image_id 's:1'" in err[0]


@pytest.mark.parametrize("command", ["audit", "export gligen-tsv"])
def test_100k_boxes_are_refused_in_bounded_memory(command, over, tmp_path):
    """As separate processes, so the peak is the command's own: VmHWM of the child's own
    address space (ru_maxrss would not do: Linux keeps the forking pytest's across exec)."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux /proc to read the peak memory")
    args = [str(a) for a in READERS[command](over / "100,000 boxes", tmp_path / "out")]
    probe = (
        "import sys\n"
        "from pipeline.cli import main\n"
        f"sys.argv = ['groundset', '--quiet', *{args!r}]\n"
        "try:\n    main()\n"
        "finally:\n"
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "    print('peak_kib', hwm.split()[1], file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=False
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and WORDS["100,000 boxes"] in lines[0], done.stderr[-2000:]
    peak_mib = int(lines[-1].split()[1]) / 1024
    assert peak_mib < 1024, peak_mib  # 5.7 GB before; about 120-180 MiB measured


def coco(images, annotations, categories=({"id": 1, "name": "dog"},)):
    return {"images": images, "annotations": annotations, "categories": list(categories)}


def test_ingest_coco_rejects_what_is_over_the_limits(tmp_path):
    images = [
        {"id": 1, "file_name": "a.jpg", "width": 640, "height": 480},
        {"id": 2, "file_name": "b.jpg", "width": 2_000_000_000, "height": 1},  # "2 GB"
        {"id": 3, "file_name": "c.jpg", "width": 640, "height": 480},
    ]
    n = defaults.MAX_BOXES_PER_IMAGE + 1
    anns = [
        {"id": k + 1, "image_id": 3, "category_id": 1, "bbox": [1, 1, 10, 10]} for k in range(n)
    ]
    anns.append({"id": n + 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 50, 50]})
    anns.append({"id": n + 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 5, 1]})
    inst = tmp_path / "instances.json"
    inst.write_text(json.dumps(coco(images, anns)))
    caps = tmp_path / "captions.json"
    caps.write_text(
        json.dumps(
            {
                "annotations": [
                    {"image_id": 1, "caption": "a dog"},
                    {"image_id": 1, "caption": MEGA_CAPTION},
                ]
            }
        )
    )
    m = ingest_coco(inst, tmp_path / "d", captions=caps, source="s")
    assert m["counts"]["images_rejected"] == {"image_too_large": 1, "too_many_boxes": 1}
    assert m["counts"]["boxes_rejected"] == {"parent_image_rejected": n + 1}
    assert m["captions"]["captions_too_long"] == 1 and m["captions"]["captions_joined"] == 1
    assert read_dataset(tmp_path / "d").records.column("captions").to_pylist() == [["a dog"]]


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (an empty IDAT: no pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"")


def test_ingest_yolo_rejects_what_is_over_the_limits(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    write_jpeg(images / "ok.jpg", 64, 48, 0)
    write_jpeg(images / "crowded.jpg", 64, 48, 1)
    (images / "huge.png").write_bytes(png_header(2**31 - 1, 2**31 - 1))
    labels.mkdir()
    (labels / "ok.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (labels / "huge.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (labels / "crowded.txt").write_text(
        "".join(f"0 0.5 0.5 0.2 {0.1 + k * 1e-5:.5f}\n" for k in range(100_000))
    )
    data = tmp_path / "data.yaml"
    data.write_text("names: [dog]\n")
    m = ingest_yolo(images, labels, data, tmp_path / "d", source="y")
    assert m["counts"]["images_rejected"] == {"image_too_large": 1, "too_many_boxes": 1}
    assert m["counts"]["boxes_kept"] == 1


def deep_json(path: Path, key: str) -> Path:
    """A COCO-shaped file whose one free-form value is nested DEEP levels."""
    value = '{"a":' * DEEP + "1" + "}" * DEEP
    path.write_text(
        '{"images": [{"id": 1, "file_name": "a.jpg", "width": 9, "height": 9, '
        f'"{key}": {value}}}], "categories": [], "annotations": ['
        f'{{"image_id": 1, "caption": {value}}}]}}'
    )
    return path


NESTED = {
    "ingest coco instances": lambda t: [
        "ingest",
        "coco",
        "--instances",
        deep_json(t / "i.json", "license"),
        "--out",
        t / "o",
    ],
    "ingest coco captions": lambda t: [
        "ingest",
        "coco",
        "--instances",
        deep_json(t / "i.json", "x"),
        "--captions",
        deep_json(t / "c.json", "license"),
        "--out",
        t / "o",
    ],
    "ingest yolo data.yaml": lambda t: [
        "ingest",
        "yolo",
        "--data",
        _write(t / "data.yaml", "names: " + "[" * DEEP + "]" * DEEP),
        "--out",
        t / "o",
    ],
    "check-params": lambda t: [
        "check-params",
        _write(t / "params.yaml", "x: " + "[" * DEEP + "]" * DEEP),
        "--out",
        t / "ok",
    ],
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(NESTED))
def test_deeply_nested_input_is_one_line(case, tmp_path, monkeypatch, capsys):
    code, err = run_cli(NESTED[case](tmp_path), monkeypatch, capsys)
    assert code == 2 and len(err) == 1 and "nested too deeply" in err[0], err
