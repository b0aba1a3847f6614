"""Fixtures shared by the export tests."""

import json

import pytest


@pytest.fixture(scope="session")
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
    cfg = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=24,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=12,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    import torch

    torch.manual_seed(0)
    sd = base / "sd"  # Stable Diffusion layout: text_encoder/ + tokenizer/
    CLIPTextModel(cfg).save_pretrained(sd / "text_encoder")
    tok.save_pretrained(sd / "tokenizer")
    proj = base / "proj"  # a CLIP text model with its projection, tokenizer inside
    CLIPTextModelWithProjection(cfg).save_pretrained(proj)
    tok.save_pretrained(proj)
    full = base / "full"  # a full CLIP checkpoint, like GLIGEN's clip-vit-large-patch14
    vision = {
        "hidden_size": 24,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 16,
    }
    CLIPModel(
        CLIPConfig(text_config=cfg.to_dict(), projection_dim=12, vision_config=vision)
    ).save_pretrained(full)
    tok.save_pretrained(full)
    return sd, proj, full
