"""GLIGEN TSV export: spans into the right words, images, and the text embeddings GLIGEN's loader needs."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import UserError
from pipeline.stages.export.gligen_tsv import export_gligen_tsv
from tests.dataset_factory import make_dataset, write_jpeg
from tests.stages.export.gligen_reader import decode_tensor_from_string, read_rows


def read_tsv(path):
    """Rows as GLIGEN's TSVDataset reads them (its TSVFile: text mode, seek per .lineidx)."""
    return [(key, json.loads(item)) for key, item in read_rows(path)]


def test_gligen_tsv_layout_spans_and_images(tmp_path, capsys):
    root = tmp_path / "imgs"
    write_jpeg(root / "a.jpg", 40, 30, seed=0)
    Image.new("RGB", (20, 10), (255, 0, 0)).save(root / "b.png")
    imgs = [
        {
            "id": 1,
            "file": "a.jpg",
            "width": 40,
            "height": 30,
            "captions": ["A Dog chases a red ball", "second"],
        },
        {"id": 2, "file": "b.png", "width": 20, "height": 10},
        {"id": 3, "file": "missing.jpg"},
    ]
    boxes = [
        {"image": 0, "xyxy": (0.1, 0.2, 0.6, 0.8), "phrase": "dog", "category": "dog"},
        {"image": 0, "xyxy": (0.0, 0.0, 0.25, 0.5), "phrase": "cat", "category": "cat"},
        {"image": 1, "xyxy": (0.5, 0.5, 1.0, 1.0), "phrase": "stop sign", "category": "sign"},
        {"image": 1, "xyxy": (0.0, 0.0, 0.5, 0.5), "phrase": "car", "category": "car"},
    ]
    make_dataset(tmp_path / "d", "s", imgs, boxes, root)
    path = export_gligen_tsv(tmp_path / "d", tmp_path / "out" / "train.tsv")
    assert "no --text-encoder" in capsys.readouterr().err
    rows = read_tsv(path)
    assert [k for k, _ in rows] == ["s:1", "s:2"]  # the image without a file is skipped
    first, second = rows[0][1], rows[1][1]
    assert first["caption"] == "A Dog chases a red ball" and first["is_det"] is False
    dog, cat = first["annos"]
    ((s, e),) = dog["tokens_positive"]
    assert first["caption"][s:e] == "Dog" and cat["tokens_positive"] == []
    # float32 corners times 32 px, written as text: within float32 rounding of whole pixels
    assert np.allclose(dog["bbox"], [4, 6, 20, 18])
    assert "text_embedding_before" not in dog
    assert second["is_det"] is True and second["caption"] == "stop sign, car"
    for a in second["annos"]:
        ((s, e),) = a["tokens_positive"]
        assert second["caption"][s:e] == a["phrase"]
    im = Image.open(io.BytesIO(base64.b64decode(first["image"])))
    assert im.size == (40, 30) and base64.b64decode(first["image"]) == (root / "a.jpg").read_bytes()
    im2 = Image.open(io.BytesIO(base64.b64decode(second["image"])))
    assert im2.format == "JPEG" and im2.size == (20, 10)


_decode = decode_tensor_from_string


def test_gligen_tsv_text_embeddings_match_diffusers_pooled_output(tmp_path, tiny_clip):
    import torch
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

    sd, proj, full = tiny_clip
    root = tmp_path / "imgs"
    write_jpeg(root / "a.jpg", 32, 32, seed=0)
    boxes = [
        {"image": 0, "xyxy": (0.1, 0.1, 0.5, 0.5), "phrase": p, "category": p}
        for p in ("dog", "stop sign", "dog")
    ]
    make_dataset(
        tmp_path / "d", "s", [{"id": 1, "file": "a.jpg", "width": 32, "height": 32}], boxes, root
    )
    tok = AutoTokenizer.from_pretrained(sd / "tokenizer")

    path = export_gligen_tsv(tmp_path / "d", tmp_path / "a.tsv", text_encoder=sd)
    annos = read_tsv(path)[0][1]["annos"]
    model = CLIPTextModel.from_pretrained(sd / "text_encoder").eval()
    with torch.no_grad():  # what StableDiffusionGLIGENPipeline computes for its phrases
        pooled = model(
            **tok(["dog", "stop sign", "dog"], padding=True, return_tensors="pt")
        ).pooler_output.numpy()
    got = np.stack([_decode(a["text_embedding_before"]) for a in annos])
    # float32 CLIP text encoder run twice (the export batches the phrases differently):
    # reduction order only, ~1e-7 on values of order 1
    assert got.shape == (3, 24) and np.allclose(got, pooled, atol=1e-5)
    assert "text_embedding_after" not in annos[0]  # an SD text encoder has no projection

    path = export_gligen_tsv(tmp_path / "d", tmp_path / "b.tsv", text_encoder=proj)
    annos = read_tsv(path)[0][1]["annos"]
    model = CLIPTextModelWithProjection.from_pretrained(proj).eval()
    with torch.no_grad():
        embeds = model(**tok(["dog", "stop sign"], padding=True, return_tensors="pt")).text_embeds
    embeds = torch.nn.functional.normalize(embeds, dim=-1).numpy()
    after = np.stack([_decode(a["text_embedding_after"]) for a in annos])
    # as above: float32, batching order only
    assert np.allclose(after, embeds[[0, 1, 0]], atol=1e-5)

    path = export_gligen_tsv(tmp_path / "d", tmp_path / "c.tsv", text_encoder=full)
    annos = read_tsv(path)[0][1]["annos"]
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(full).eval()
    with torch.no_grad():
        pooled = clip.text_model(
            **tok(["dog", "stop sign"], padding=True, return_tensors="pt")
        ).pooler_output
        projected = torch.nn.functional.normalize(clip.text_projection(pooled), dim=-1)
    got = np.stack([_decode(a["text_embedding_before"]) for a in annos])
    after = np.stack([_decode(a["text_embedding_after"]) for a in annos])
    # as above: float32, batching order only
    assert np.allclose(got, pooled.numpy()[[0, 1, 0]], atol=1e-5)
    assert after.shape == (3, 12) and np.allclose(after, projected.numpy()[[0, 1, 0]], atol=1e-5)


def test_gligen_tsv_missing_encoder_says_where_to_get_it(tmp_path):
    make_dataset(tmp_path / "d", "s", [{"id": 1, "file": "a.jpg"}], [], tmp_path / "images")
    with pytest.raises(UserError, match="clip-vit-large-patch14"):
        export_gligen_tsv(tmp_path / "d", tmp_path / "a.tsv", text_encoder=tmp_path / "nope")
