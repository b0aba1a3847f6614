import base64
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.core.dataset import read_dataset
from pipeline.core.errors import UserError
from pipeline.stages.export import export
from pipeline.stages.export.coco import export_coco
from pipeline.stages.export.gligen_tsv import export_gligen_tsv, lineidx_path
from pipeline.stages.export.yolo import export_yolo
from pipeline.stages.ingest.coco import ingest_coco
from tests.dataset_factory import make_dataset, write_jpeg


def synthetic_coco(tmp_path, n_images=30, seed=0):
    """A COCO instances + captions pair with awkward but valid values: category ids with
    gaps, float pixel boxes, licence ids, several captions per image, some images empty."""
    rng = np.random.default_rng(seed)
    cats = [{"id": i, "name": n, "supercategory": "thing"}
            for i, n in [(1, "person"), (3, "car"), (18, "dog"), (90, "toothbrush")]]
    images, anns, caps = [], [], []
    for i in range(n_images):
        w, h = int(rng.integers(40, 700)), int(rng.integers(40, 700))
        images.append({"id": 1000 + 7 * i, "file_name": f"{i:012d}.jpg", "width": w, "height": h,
                       "license": int(rng.integers(1, 4))})
        for _ in range(int(rng.integers(0, 6))):
            x, y = rng.uniform(0, w - 5), rng.uniform(0, h - 5)
            bw, bh = rng.uniform(1, w - x), rng.uniform(1, h - y)
            anns.append({"id": len(anns) + 1, "image_id": 1000 + 7 * i, "iscrowd": 0,
                         "category_id": int(rng.choice([c["id"] for c in cats])),
                         "bbox": [float(x), float(y), float(bw), float(bh)],
                         "area": float(bw * bh), "segmentation": [[x, y, x + bw, y, x + bw, y + bh]]})
        for k in range(int(rng.integers(0, 3))):
            caps.append({"id": len(caps) + 1, "image_id": 1000 + 7 * i, "caption": f"A dog {k} car"})
    licenses = [{"id": k, "name": f"License {k}", "url": f"http://example.org/{k}"} for k in (1, 2, 3)]
    inst = tmp_path / "instances_syn.json"
    inst.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats,
                                "licenses": licenses}))
    cap = tmp_path / "captions_syn.json"
    cap.write_text(json.dumps({"images": images, "annotations": caps}))
    return inst, cap


def test_coco_round_trip_synthetic(tmp_path):
    inst, cap = synthetic_coco(tmp_path)
    m1 = ingest_coco(inst, tmp_path / "d1", captions=cap, source="syn")
    path = export_coco(tmp_path / "d1", tmp_path / "coco")
    m2 = ingest_coco(path, tmp_path / "d2", captions=path.parent / "captions.json", source="syn")
    a, b = read_dataset(tmp_path / "d1").records, read_dataset(tmp_path / "d2").records
    assert a.num_rows == 30 and m1["counts"]["boxes_kept"] > 30
    assert a.equals(b)
    assert m2["counts"]["images_rejected"] == {} and m2["counts"]["boxes_rejected"] == {}
    for key in ("categories", "licenses"):
        assert m1["sources"]["syn"][key] == m2["sources"]["syn"][key]


def test_coco_round_trip_real_subset(tmp_path, shared_data):
    sub = shared_data / "coco_instances_val2017_subsets" / "cocotiny_instances_val2017_80img.json"
    cap = shared_data / "coco_captions_val2017" / "captions_val2017.json"
    ingest_coco(sub, tmp_path / "d1", captions=cap, source="tiny")
    path = export_coco(tmp_path / "d1", tmp_path / "coco")
    ingest_coco(path, tmp_path / "d2", captions=path.parent / "captions.json", source="tiny")
    assert read_dataset(tmp_path / "d1").records.equals(read_dataset(tmp_path / "d2").records)


def test_coco_export_is_valid_for_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    imgs = [{"id": 5, "file": "a.jpg", "width": 200, "height": 100, "captions": ["a cat"]},
            {"id": 9, "file": "b/c.jpg", "width": 64, "height": 64}]
    boxes = [{"image": 0, "xyxy": (0.1, 0.2, 0.5, 0.9), "category": "cat"},
             {"image": 0, "xyxy": (0.0, 0.0, 1.0, 1.0), "category": "dog"},
             {"image": 1, "xyxy": (0.25, 0.25, 0.75, 0.5), "category": "cat"}]
    make_dataset(tmp_path / "d", "s", imgs, boxes)
    path = export("coco", tmp_path / "d", tmp_path / "out")
    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [5, 9]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cat", "dog"]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[5]))
    assert len(anns) == 2 and all(a["iscrowd"] == 0 for a in anns)
    x, y, w, h = anns[0]["bbox"]
    assert np.allclose([x, y, x + w, y + h], np.float32([0.1, 0.2, 0.5, 0.9]) * [200, 100, 200, 100])
    assert anns[0]["area"] == pytest.approx(w * h)
    assert "segmentation" not in anns[0]  # boxes only, documented
    caps = json.loads((tmp_path / "out" / "captions.json").read_text())["annotations"]
    assert caps == [{"id": 1, "image_id": 5, "caption": "a cat"}]


def test_coco_ids_fall_back_to_sequential_when_not_unique(tmp_path):
    a = make_dataset(tmp_path / "a", "s", [{"id": 1, "file": "x.jpg"}], [])
    from pipeline.stages.curate import curate

    b = make_dataset(tmp_path / "b", "t", [{"id": 1, "file": "y.jpg"}], [])
    curate([a, b], tmp_path / "m", hash_images=False)
    path = export_coco(tmp_path / "m", tmp_path / "out")
    images = json.loads(path.read_text())["images"]
    assert [i["id"] for i in images] == [1, 2]
    assert [i["groundset_image_id"] for i in images] == ["s:1", "t:1"]


@pytest.fixture
def yolo_source(tmp_path):
    root = tmp_path / "imgs"
    images = []
    for i in range(12):
        write_jpeg(root / "sub" / f"{i}.jpg", 48, 32, seed=i)
        images.append({"id": i, "file": f"sub/{i}.jpg", "width": 48, "height": 32,
                       "split": "val" if i % 4 == 0 else "train"})
    boxes = [{"image": i, "xyxy": (0.1 * (i % 5), 0.2, 0.1 * (i % 5) + 0.3, 0.7),
              "category": ["zebra", "apple", "kite"][(i + k) % 3]}
             for i in range(12) for k in range(i % 3)]
    return make_dataset(tmp_path / "d", "src", images, boxes, root)


def test_yolo_layout_labels_and_ultralytics_reads_it(tmp_path, yolo_source):
    data_yaml = export_yolo(yolo_source, tmp_path / "y")
    data = yaml.safe_load(data_yaml.read_text())
    assert data["path"] == str((tmp_path / "y").resolve())
    assert data["names"] == {0: "apple", 1: "kite", 2: "zebra"}  # no category list: sorted
    rec = read_dataset(yolo_source).records.to_pylist()
    for r in rec:
        split = "val" if r["split"] == "val" else "train"
        stem = r["file"].replace("/", "__")[:-4]
        img = tmp_path / "y" / "images" / split / f"{stem}.jpg"
        assert img.read_bytes() == (tmp_path / "imgs" / r["file"]).read_bytes()
        rows = [line.split() for line in
                (tmp_path / "y" / "labels" / split / f"{stem}.txt").read_text().splitlines()]
        assert len(rows) == len(r["boxes"])
        for row, b in zip(rows, r["boxes"]):
            assert data["names"][int(row[0])] == b["category"]
            want = [(b["x0"] + b["x1"]) / 2, (b["y0"] + b["y1"]) / 2, b["x1"] - b["x0"],
                    b["y1"] - b["y0"]]
            assert np.allclose([float(v) for v in row[1:]], want, atol=1e-6)

    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    d = check_det_dataset(str(data_yaml))
    val = YOLODataset(img_path=d["val"], data=d, task="detect", augment=False, imgsz=64)
    assert len(val.labels) == 3
    assert sum(len(lb["cls"]) for lb in val.labels) == sum(
        len(r["boxes"]) for r in rec if r["split"] == "val")


def test_yolo_keeps_category_ids_from_manifest_and_skips_missing_images(tmp_path, yolo_source):
    (tmp_path / "imgs" / "sub" / "3.jpg").unlink()
    manifest = json.loads((yolo_source / "manifest.json").read_text())
    manifest["sources"]["src"]["categories"] = [
        {"id": 7, "name": "kite"}, {"id": 2, "name": "zebra"}, {"id": 5, "name": "horse"}]
    (yolo_source / "manifest.json").write_text(json.dumps(manifest))
    data_yaml = export_yolo(yolo_source, tmp_path / "y")
    names = yaml.safe_load(data_yaml.read_text())["names"]
    assert names == {0: "zebra", 1: "horse", 2: "kite", 3: "apple"}  # by id, then the rest
    n = sum(len(os.listdir(tmp_path / "y" / "images" / s)) for s in ("train", "val"))
    assert n == 11


def test_yolo_without_images_is_a_user_error(tmp_path):
    make_dataset(tmp_path / "d", "s", [{"id": 1, "file": "x.jpg"}], [], tmp_path)
    with pytest.raises(UserError, match="none of the 1 images"):
        export_yolo(tmp_path / "d", tmp_path / "y")
    assert not (tmp_path / "y").exists()


def read_tsv(path):
    """Read rows the way GLIGEN's TSVFile does: seek to each .lineidx offset."""
    offsets = [int(x) for x in lineidx_path(path).read_text().split()]
    rows = []
    with open(path) as f:
        for pos in offsets:
            f.seek(pos)
            key, item = [s.strip() for s in f.readline().split("\t")]
            rows.append((key, json.loads(item)))
    return rows


def test_gligen_tsv_layout_spans_and_images(tmp_path, capsys):
    root = tmp_path / "imgs"
    write_jpeg(root / "a.jpg", 40, 30, seed=0)
    Image.new("RGB", (20, 10), (255, 0, 0)).save(root / "b.png")
    imgs = [{"id": 1, "file": "a.jpg", "width": 40, "height": 30,
             "captions": ["A Dog chases a red ball", "second"]},
            {"id": 2, "file": "b.png", "width": 20, "height": 10},
            {"id": 3, "file": "missing.jpg"}]
    boxes = [{"image": 0, "xyxy": (0.1, 0.2, 0.6, 0.8), "phrase": "dog", "category": "dog"},
             {"image": 0, "xyxy": (0.0, 0.0, 0.25, 0.5), "phrase": "cat", "category": "cat"},
             {"image": 1, "xyxy": (0.5, 0.5, 1.0, 1.0), "phrase": "stop sign", "category": "sign"},
             {"image": 1, "xyxy": (0.0, 0.0, 0.5, 0.5), "phrase": "car", "category": "car"}]
    make_dataset(tmp_path / "d", "s", imgs, boxes, root)
    path = export_gligen_tsv(tmp_path / "d", tmp_path / "out" / "train.tsv")
    assert "no --text-encoder" in capsys.readouterr().err
    rows = read_tsv(path)
    assert [k for k, _ in rows] == ["s:1", "s:2"]  # the image without a file is skipped
    first, second = rows[0][1], rows[1][1]
    assert first["caption"] == "A Dog chases a red ball" and first["is_det"] is False
    dog, cat = first["annos"]
    (s, e), = dog["tokens_positive"]
    assert first["caption"][s:e] == "Dog" and cat["tokens_positive"] == []
    assert np.allclose(dog["bbox"], [4, 6, 20, 18])
    assert "text_embedding_before" not in dog
    assert second["is_det"] is True and second["caption"] == "stop sign, car"
    for a in second["annos"]:
        (s, e), = a["tokens_positive"]
        assert second["caption"][s:e] == a["phrase"]
    im = Image.open(io.BytesIO(base64.b64decode(first["image"])))
    assert im.size == (40, 30) and base64.b64decode(first["image"]) == (root / "a.jpg").read_bytes()
    im2 = Image.open(io.BytesIO(base64.b64decode(second["image"])))
    assert im2.format == "JPEG" and im2.size == (20, 10)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny CLIP tokenizer (letters-only BPE vocab) and two tiny text models, offline."""
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    base = tmp_path_factory.mktemp("clip")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = letters + [c + "</w>" for c in letters] + ["<unk>", "<|startoftext|>", "<|endoftext|>"]
    (base / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (base / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(base / "vocab.json"), str(base / "merges.txt"), unk_token="<unk>")
    cfg = CLIPTextConfig(vocab_size=len(vocab), hidden_size=24, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                         projection_dim=12, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    import torch

    torch.manual_seed(0)
    sd = base / "sd"  # Stable Diffusion layout: text_encoder/ + tokenizer/
    CLIPTextModel(cfg).save_pretrained(sd / "text_encoder")
    tok.save_pretrained(sd / "tokenizer")
    proj = base / "proj"  # a CLIP text model with its projection, tokenizer inside
    CLIPTextModelWithProjection(cfg).save_pretrained(proj)
    tok.save_pretrained(proj)
    full = base / "full"  # a full CLIP checkpoint, like GLIGEN's clip-vit-large-patch14
    vision = {"hidden_size": 24, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": 32, "patch_size": 16}
    CLIPModel(CLIPConfig(text_config=cfg.to_dict(), projection_dim=12, vision_config=vision)
              ).save_pretrained(full)
    tok.save_pretrained(full)
    return sd, proj, full


def _decode(s):  # GLIGEN's decode_tensor_from_string
    return np.frombuffer(base64.b64decode(s), dtype="float32")


def test_gligen_tsv_text_embeddings_match_diffusers_pooled_output(tmp_path, tiny_clip):
    import torch
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

    sd, proj, full = tiny_clip
    root = tmp_path / "imgs"
    write_jpeg(root / "a.jpg", 32, 32, seed=0)
    boxes = [{"image": 0, "xyxy": (0.1, 0.1, 0.5, 0.5), "phrase": p, "category": p}
             for p in ("dog", "stop sign", "dog")]
    make_dataset(tmp_path / "d", "s", [{"id": 1, "file": "a.jpg", "width": 32, "height": 32}],
                 boxes, root)
    tok = AutoTokenizer.from_pretrained(sd / "tokenizer")

    path = export_gligen_tsv(tmp_path / "d", tmp_path / "a.tsv", text_encoder=sd)
    annos = read_tsv(path)[0][1]["annos"]
    model = CLIPTextModel.from_pretrained(sd / "text_encoder").eval()
    with torch.no_grad():  # what StableDiffusionGLIGENPipeline computes for its phrases
        pooled = model(**tok(["dog", "stop sign", "dog"], padding=True, return_tensors="pt")
                       ).pooler_output.numpy()
    got = np.stack([_decode(a["text_embedding_before"]) for a in annos])
    assert got.shape == (3, 24) and np.allclose(got, pooled, atol=1e-5)
    assert "text_embedding_after" not in annos[0]  # an SD text encoder has no projection

    path = export_gligen_tsv(tmp_path / "d", tmp_path / "b.tsv", text_encoder=proj)
    annos = read_tsv(path)[0][1]["annos"]
    model = CLIPTextModelWithProjection.from_pretrained(proj).eval()
    with torch.no_grad():
        embeds = model(**tok(["dog", "stop sign"], padding=True, return_tensors="pt")).text_embeds
    embeds = torch.nn.functional.normalize(embeds, dim=-1).numpy()
    after = np.stack([_decode(a["text_embedding_after"]) for a in annos])
    assert np.allclose(after, embeds[[0, 1, 0]], atol=1e-5)

    path = export_gligen_tsv(tmp_path / "d", tmp_path / "c.tsv", text_encoder=full)
    annos = read_tsv(path)[0][1]["annos"]
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(full).eval()
    with torch.no_grad():
        pooled = clip.text_model(**tok(["dog", "stop sign"], padding=True, return_tensors="pt")
                                 ).pooler_output
        projected = torch.nn.functional.normalize(clip.text_projection(pooled), dim=-1)
    got = np.stack([_decode(a["text_embedding_before"]) for a in annos])
    after = np.stack([_decode(a["text_embedding_after"]) for a in annos])
    assert np.allclose(got, pooled.numpy()[[0, 1, 0]], atol=1e-5)
    assert after.shape == (3, 12) and np.allclose(after, projected.numpy()[[0, 1, 0]], atol=1e-5)


def test_gligen_tsv_missing_encoder_says_where_to_get_it(tmp_path):
    make_dataset(tmp_path / "d", "s", [{"id": 1, "file": "a.jpg"}], [], tmp_path)
    with pytest.raises(UserError, match="clip-vit-large-patch14"):
        export_gligen_tsv(tmp_path / "d", tmp_path / "a.tsv", text_encoder=tmp_path / "nope")


def test_bad_inputs_are_user_errors(tmp_path):
    make_dataset(tmp_path / "d", "s", [{"id": 1, "file": "a.jpg"}], [])
    with pytest.raises(UserError, match="unknown export format"):
        export("parquet", tmp_path / "d", tmp_path / "o")
    with pytest.raises(UserError, match="not a groundset dataset"):
        export("coco", tmp_path / "nothing", tmp_path / "o")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not an earlier"):
        export("coco", tmp_path / "d", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_cli_export_one_line_errors(tmp_path):
    make_dataset(tmp_path / "d", "s", [{"id": 1, "file": "a.jpg"}], [])
    cmd = [sys.executable, "-m", "pipeline.cli", "export"]
    bad = subprocess.run(cmd + ["yolo", str(tmp_path / "d"), "--out", str(tmp_path / "y"),
                                "--text-encoder", str(tmp_path)],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    ok = subprocess.run(cmd + ["coco", str(tmp_path / "d"), "--out", str(tmp_path / "c")],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "c" / "instances.json").read_text())["images"][0]["id"] == 1


def test_real_coco128_chain_yolo_and_coco_sources(tmp_path, shared_data):
    """ingest yolo + ingest coco of the same 128 photos -> curate finds every photo twice
    by content -> export yolo -> ingest yolo reads back the same boxes."""
    from pipeline.stages.curate import DUPLICATE_IMAGE, curate
    from pipeline.stages.ingest.yolo import ingest_yolo

    c128 = shared_data / "coco128"
    imgs = c128 / "images" / "train2017"
    ingest_yolo(imgs, c128 / "object_detection" / "labels" / "train2017",
                c128 / "object_detection" / "config.yaml", tmp_path / "y", source="c128")
    ingest_coco(c128 / "coco_json_train2017_first128" / "instances_train2017_first128.json",
                tmp_path / "c", images_root=imgs, source="c128json")
    m = curate([tmp_path / "y", tmp_path / "c"], tmp_path / "cur", val_fraction=0.25)
    assert m["counts"]["images_rejected"] == {DUPLICATE_IMAGE: 128}
    assert m["counts"]["images_kept"] == 128
    cur = read_dataset(tmp_path / "cur").records
    assert set(cur.column("source").to_pylist()) == {"c128"}

    data_yaml = export_yolo(tmp_path / "cur", tmp_path / "export")
    ingest_yolo(tmp_path / "export" / "images" / "train", tmp_path / "export" / "labels" / "train",
                data_yaml, tmp_path / "back", source="c128")
    back = {r["image_id"]: r for r in read_dataset(tmp_path / "back").records.to_pylist()}
    train = [r for r in cur.to_pylist() if r["split"] == "train"]
    assert len(back) == len(train) > 64
    for r in train:
        got = back[r["image_id"]]["boxes"]
        assert [b["category"] for b in got] == [b["category"] for b in r["boxes"]]
        for g, b in zip(got, r["boxes"]):
            assert np.allclose([g[k] for k in ["x0", "y0", "x1", "y1"]],
                               [b[k] for k in ["x0", "y0", "x1", "y1"]], atol=2e-6)
