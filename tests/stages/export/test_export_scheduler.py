"""``export yolo`` and ``export gligen-tsv`` with ``--scheduler``: one dask task per
records part (``map_parts``), and the same output, byte for byte, as in process, on a
dataset of several parts (name collisions across parts, val images, a missing file, a
PNG to re-encode, annotation ids running on across parts)."""

import json

import pytest
from PIL import Image

from pipeline.stages.export import export
from pipeline.stages.export.gligen_tsv import lineidx_path
from tests.dataset_factory import make_dataset, write_jpeg


@pytest.fixture
def parts_dataset(tmp_path, monkeypatch):
    """13 images in parts of 3 rows (5 parts): ``a/b.jpg`` and ``a__b.jpg`` flatten to the
    same YOLO name in different parts, every fourth image is val, image 7 has no file,
    image 5 is a PNG, captions on some images, boxes everywhere but image 2."""
    from pipeline.core import dataset as ds_mod

    monkeypatch.setattr(ds_mod, "ROWS_PER_PART", 3)
    root = tmp_path / "imgs"
    files = [f"{i}.jpg" for i in range(13)]
    files[1], files[10], files[5] = "a/b.jpg", "a__b.jpg", "5.png"
    images = []
    for i, f in enumerate(files):
        if f.endswith(".png"):
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 12), (200, 10, 10)).save(root / f)
        elif i != 7:
            write_jpeg(root / f, 24, 16, seed=i)
        im = {"id": i, "file": f, "width": 24, "height": 16}
        im["split"] = "val" if i % 4 == 0 else "train"
        if i % 3 == 0:
            im["captions"] = [f"A red kite and a dog number {i}"]
        images.append(im)
    boxes = [
        {
            "image": i,
            "xyxy": (0.05 * k, 0.1, 0.05 * k + 0.4, 0.6),
            "phrase": ["kite", "dog", "stop sign"][(i + k) % 3],
            "category": ["kite", "dog", "sign"][(i + k) % 3],
        }
        for i in range(13)
        if i != 2
        for k in range(1 + i % 3)
    ]
    src = make_dataset(tmp_path / "d", "s", images, boxes, root)
    assert len(json.loads((src / "manifest.json").read_text())["parts"]) == 5
    return src


def _tree(folder):
    """Every file under ``folder`` and its bytes (``data.yaml`` names the folder)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            out[str(p.relative_to(folder))] = data.replace(str(folder).encode(), b"OUT")
    return out


def _cluster():
    """A real scheduler and worker on tcp://127.0.0.1 (threads of this process, so no
    spawn), as in tests/stages/test_parts.py."""
    distributed = pytest.importorskip("dask.distributed")
    return distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", dashboard_address=None
    )


@pytest.mark.parametrize("scheduler", ["threads", "tcp"])
def test_yolo_with_a_scheduler_writes_the_same_files(tmp_path, parts_dataset, scheduler):
    export("yolo", parts_dataset, tmp_path / "here")
    here = _tree(tmp_path / "here")
    assert "images/train/s__a__b-1.jpg" not in here  # one source: no prefix
    assert {"images/train/a__b-1.jpg", "images/train/a__b-10.jpg"} <= set(here)
    assert "images/val/8.jpg" in here and "images/train/7.jpg" not in here
    if scheduler == "threads":
        export("yolo", parts_dataset, tmp_path / "there", scheduler="threads")
    else:
        with _cluster() as cluster:
            export("yolo", parts_dataset, tmp_path / "there", scheduler=cluster.scheduler_address)
            ran = set(cluster.scheduler.task_prefixes)
        assert {"names_part", "write_part"} <= ran  # the parts ran on the cluster
    assert _tree(tmp_path / "there") == here


@pytest.mark.parametrize("scheduler", ["threads", "processes", "tcp"])
def test_gligen_tsv_with_a_scheduler_writes_the_same_bytes(tmp_path, parts_dataset, scheduler):
    one = export("gligen-tsv", parts_dataset, tmp_path / "here.tsv", split="all")
    if scheduler == "tcp":
        with _cluster() as cluster:
            there = export(
                "gligen-tsv",
                parts_dataset,
                tmp_path / "there.tsv",
                split="all",
                scheduler=cluster.scheduler_address,
            )
            ran = set(cluster.scheduler.task_prefixes)
        assert {"count_part", "tsv_part"} <= ran
    else:
        there = export(
            "gligen-tsv", parts_dataset, tmp_path / "there.tsv", split="all", scheduler=scheduler
        )
    assert there.read_bytes() == one.read_bytes()
    assert lineidx_path(there).read_bytes() == lineidx_path(one).read_bytes()
    lines = one.read_bytes().splitlines()
    assert len(lines) == 12  # 13 images, one without its file
    ids = [a["id"] for line in lines for a in json.loads(line.split(b"\t")[1])["annos"]]
    # ids run on across the parts; image 7 (no file) keeps its two, 11 and 12, unused
    assert ids == [*range(1, 11), *range(13, 23)]
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]  # spills removed


def test_gligen_tsv_text_embeddings_on_threads_load_the_encoder_once(
    tmp_path, parts_dataset, tiny_clip
):
    from pipeline.stages.export import text_embed

    _, proj, _ = tiny_clip
    one = export("gligen-tsv", parts_dataset, tmp_path / "here.tsv", proj, split="val")
    text_embed._load.cache_clear()
    there = export(
        "gligen-tsv", parts_dataset, tmp_path / "there.tsv", proj, split="val", scheduler="threads"
    )
    # float32 CLIP on the same phrases in the same batches, in one process: the same bits
    assert there.read_bytes() == one.read_bytes()
    assert lineidx_path(there).read_bytes() == lineidx_path(one).read_bytes()
    assert b"text_embedding_after" in one.read_bytes()
    loads = text_embed._load.cache_info()
    assert (loads.misses, loads.hits) == (1, 4)  # 5 parts (one without val images), one load
