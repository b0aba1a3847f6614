"""Text conditioning: what the UNet reads from a caption and what position_net reads from a phrase.

**Captions.** SD 1.x cross-attends to CLIP's last hidden state. SDXL cross-attends to
the penultimate hidden states of both its encoders side by side (768 + 1280 = 2048
wide) and adds the second encoder's projected pooled embedding to its time embedding;
the refiner uses the second encoder alone. These follow diffusers'
``StableDiffusionXLPipeline.encode_prompt`` exactly.

**Phrases.** GLIGEN's ``position_net`` takes one embedding per box, as wide as the
UNet's ``cross_attention_dim``. SD 1.x uses CLIP's pooled output (the end-of-text
token, what diffusers' GLIGEN pipeline feeds it). For SDXL groundset follows IGLIGEN-XL
(the published SDXL GLIGEN adapters, ``pipeline_gligen_sdxl.py``'s
``encode_prompt_gligen``): the first encoder's pooled output beside the second's
projected pooled output, 768 + 1280 = 2048 wide. Why both and why pooled:

- 2048 is exactly what diffusers' gated SDXL UNet builds ``position_net`` for
  (``positive_len = cross_attention_dim``), so the adapters keep diffusers' key names
  and shapes, and IGLIGEN-XL's weights and ours are interchangeable in layout;
- a phrase is short and describes one object; the pooled token is CLIP's summary of it,
  trained to match images, while a token sequence would need a new pooling layer;
- the second encoder is the one SDXL's time embedding already reads, and the first is
  the one SD 1.x GLIGEN adapters were trained on, so neither half is new to the model.

CLIP's causal mask makes a pooled (end-of-text) embedding independent of the padding
after it, so phrases are encoded in any batch and cached one by one.
"""

from __future__ import annotations

import torch

from trainer.arch import SD1


def _ids(tokenizer, texts: list[str], device) -> torch.Tensor:
    return tokenizer(
        list(texts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)


@torch.no_grad()
def encode_caption_ids(comps, ids: torch.Tensor | None, ids_2: torch.Tensor | None):
    """(hidden states, pooled or None) from token ids of the first and second tokenizer."""
    if comps.arch == SD1:
        return comps.text_encoder(ids.to(comps.text_encoder.device))[0], None
    hidden, pooled = [], None
    for te, tok_ids in ((comps.text_encoder, ids), (comps.text_encoder_2, ids_2)):
        if te is None:
            continue
        out = te(tok_ids.to(te.device), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])  # SDXL: penultimate layer, no final norm
        pooled = out[0]  # the last encoder's: text_embeds of the projection model
    return torch.cat(hidden, -1), pooled


def tokenize_captions(comps, captions: list[str]) -> tuple:
    """Token ids for each tokenizer the model has (None where it has none)."""
    return tuple(
        None if tok is None else _ids(tok, captions, "cpu")
        for tok in (comps.tokenizer, comps.tokenizer_2)
    )


@torch.no_grad()
def encode_captions(comps, captions: list[str]):
    """Caption conditioning: ``(hidden states, pooled embedding)``; pooled is None for SD 1.x."""
    return encode_caption_ids(comps, *tokenize_captions(comps, captions))


@torch.no_grad()
def encode_prompts(comps, captions: list[str]) -> torch.Tensor:
    """The hidden states a UNet cross-attends to, padded to the tokenizer's max length."""
    return encode_captions(comps, captions)[0]


@torch.no_grad()
def null_captions(comps, n: int):
    """The dropped caption's conditioning (classifier-free guidance), ``n`` times.

    SD 1.x: the encoding of "". SDXL: zeros, hidden and pooled alike, where the folder
    says ``force_zeros_for_empty_prompt`` (SDXL's base; its training zeroed dropped
    text, and its pipeline's negative prompt is zeros); the encoding of "" otherwise.
    """
    hidden, pooled = encode_captions(comps, [""] * n)
    if comps.force_zeros_for_empty_prompt:
        hidden = torch.zeros_like(hidden)
        pooled = None if pooled is None else torch.zeros_like(pooled)
    return hidden, pooled


@torch.no_grad()
def encode_phrases(comps, phrases: list[str]) -> torch.Tensor:
    """One embedding per phrase, as wide as ``position_net`` takes (see the module doc)."""
    te = comps.text_encoder
    parts = [(te, comps.tokenizer, "pooler_output")]
    if comps.arch != SD1:  # SDXL: bigG's projected pooled output beside CLIP-L's
        parts.append((comps.text_encoder_2, comps.tokenizer_2, "text_embeds"))
    if not phrases:
        width = sum(
            m.config.projection_dim if field == "text_embeds" else m.config.hidden_size
            for m, _, field in parts
        )
        return torch.zeros(0, width, device=te.device, dtype=te.dtype)
    out = []
    for m, tok, field in parts:
        enc = tok(
            list(phrases),
            padding=True,
            truncation=True,
            max_length=tok.model_max_length,
            return_tensors="pt",
        ).to(m.device)
        out.append(getattr(m(**enc), field))
    return torch.cat(out, -1)
