"""Merge a base model and trained adapters into a diffusers GLIGEN pipeline folder.

Adapters alone are small and tied to their base model; people who just want to draw
layouts expect a folder that ``StableDiffusionGLIGENPipeline.from_pretrained`` opens, like
the published GLIGEN checkpoints. This writes exactly that (gated UNet with the adapters
in it, the base VAE / text encoder / tokenizer, a DDIM or DPM-Solver scheduler built from
the training schedule), and ``load_components`` reads it back as a GLIGEN folder.

diffusers has no SDXL GLIGEN pipeline class. An SDXL model is written as a
``StableDiffusionXLPipeline`` folder whose UNet is the gated one; its README holds the
few lines of diffusers code that feed it boxes and phrases (``SDXL_USAGE``, tested in
``tests/trainer/test_sdxl_export.py``), and groundset's ``sample`` reads it directly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline.core import defaults as D
from pipeline.core.atomic import atomic_output_dir
from pipeline.core.errors import UserError
from trainer.arch import SDXL
from trainer.diffusion import make_sampler
from trainer.model import load_adapters, load_components
from trainer.quiet import quiet_libraries

KIND = "export-gligen"  # the output kind of this folder (pipeline.core.outputs)
# a CLIP tokenizer's files, as Stable Diffusion folders ship them (tokenizer.json: newer)
TOKENIZER_FILES = (
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.json",
)
USAGE = """# GLIGEN pipeline folder written by `groundset export-gligen`

Base model: {model}
Adapters: {adapters}

```python
from diffusers import StableDiffusionGLIGENPipeline
pipe = StableDiffusionGLIGENPipeline.from_pretrained("{out}")
image = pipe(prompt="a dog and a cat", gligen_phrases=["dog", "cat"],
             gligen_boxes=[[0.1, 0.1, 0.5, 0.9], [0.5, 0.2, 0.9, 0.9]],
             gligen_scheduled_sampling_beta=0.3).images[0]
```
"""


SDXL_USAGE = """# SDXL GLIGEN folder written by `groundset export-gligen`

Base model: {model}
Adapters: {adapters}

A `StableDiffusionXLPipeline` folder with a gated UNet (GLIGEN's `fuser` layers and
`position_net`). diffusers has no SDXL GLIGEN pipeline, so the grounding goes in through
`cross_attention_kwargs`; phrases are embedded as IGLIGEN-XL does (both text encoders'
pooled outputs side by side), and the fusers run for the first `beta` of the steps:

```python
import torch
from diffusers import StableDiffusionXLPipeline

pipe = StableDiffusionXLPipeline.from_pretrained("{out}")
phrases, boxes = ["a dog", "a cat"], [[0.1, 0.1, 0.5, 0.9], [0.5, 0.2, 0.9, 0.9]]
steps, beta, n = 50, 0.3, len(phrases)
with torch.no_grad():
    t1 = pipe.text_encoder(**pipe.tokenizer(phrases, padding=True, return_tensors="pt"))
    t2 = pipe.text_encoder_2(**pipe.tokenizer_2(phrases, padding=True, return_tensors="pt"))
dim = pipe.unet.config.cross_attention_dim
g = {{"boxes": torch.zeros(2, 30, 4), "positive_embeddings": torch.zeros(2, 30, dim),
     "masks": torch.zeros(2, 30)}}  # row 0: the unconditional half of guidance, no boxes
g["boxes"][:, :n] = torch.tensor(boxes)
g["positive_embeddings"][:, :n] = torch.cat([t1.pooler_output, t2.text_embeds], -1)
g["masks"][1, :n] = 1

def fusers(on):
    for m in pipe.unet.modules():
        if type(m).__name__ == "GatedSelfAttentionDense":
            m.enabled = on

def scheduled_sampling(pipe, i, t, kwargs):
    if i + 1 == int(beta * steps):
        fusers(False)
    return kwargs

fusers(int(beta * steps) > 0)
image = pipe("a dog and a cat", num_inference_steps=steps, guidance_scale=7.5,
             cross_attention_kwargs={{"gligen": g}}, callback_on_step_end=scheduled_sampling,
             generator=torch.Generator().manual_seed(0)).images[0]
fusers(True)
```
"""


def gligen_pipeline(comps, scheduler: str = D.SAMPLER):
    """diffusers' own GLIGEN pipeline over our components, with no safety checker
    (SDXL: ``StableDiffusionXLPipeline`` over the gated UNet)."""
    from diffusers.pipelines.deprecated.stable_diffusion_gligen import (
        StableDiffusionGLIGENPipeline,
    )

    if comps.arch == SDXL:
        from diffusers import StableDiffusionXLPipeline

        pipe = StableDiffusionXLPipeline(
            vae=comps.vae,
            text_encoder=comps.text_encoder,
            text_encoder_2=comps.text_encoder_2,
            tokenizer=comps.tokenizer,
            tokenizer_2=comps.tokenizer_2,
            unet=comps.unet,
            scheduler=make_sampler(comps.scheduler, scheduler),
            force_zeros_for_empty_prompt=comps.force_zeros_for_empty_prompt,
            add_watermarker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    pipe = StableDiffusionGLIGENPipeline(
        vae=comps.vae,
        text_encoder=comps.text_encoder,
        tokenizer=comps.tokenizer,
        unet=comps.unet,
        scheduler=make_sampler(comps.scheduler, scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def copy_tokenizer(base: Path, dst: Path) -> None:
    """Replace the saved tokenizer with the base model's own files, byte for byte.

    transformers 5 saves a CLIP tokenizer as ``tokenizer.json`` alone, which the slow
    ``CLIPTokenizer`` of transformers 4 cannot open (it needs ``vocab.json`` and
    ``merges.txt``); the base files load under both. A base folder that lacks
    ``vocab.json``/``merges.txt`` (one exported before this was fixed) gets them rebuilt
    from its ``tokenizer.json``, so re-exporting repairs it.
    """
    present = [name for name in TOKENIZER_FILES if (base / name).is_file()]
    if not present:
        return  # nothing to copy: keep what save_pretrained wrote
    for old in dst.iterdir():  # the saved config stays only where the base has none
        if old.name != "tokenizer_config.json" or "tokenizer_config.json" in present:
            old.unlink()
    for name in present:
        shutil.copyfile(base / name, dst / name)  # follows hub-cache symlinks
    if not ((dst / "vocab.json").is_file() and (dst / "merges.txt").is_file()):
        _vocab_from_tokenizer_json(dst)


def _vocab_from_tokenizer_json(folder: Path) -> None:
    """Write ``vocab.json`` and ``merges.txt`` from a BPE ``tokenizer.json``."""
    try:
        model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
        vocab, merges = model["vocab"], model["merges"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"{folder.name}/: the base tokenizer has no vocab.json/merges.txt and its "
            f"tokenizer.json holds no BPE vocabulary ({type(e).__name__})"
        ) from None
    lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{m}\n" for m in lines), encoding="utf-8"
    )


def write_gligen_folder(
    model: str | Path, adapters: str | Path | None, out: str | Path, scheduler: str = D.SAMPLER
) -> Path:
    """Write the merged pipeline folder atomically and return its path."""
    out = Path(out)
    comps = load_components(model, gated=True)
    if comps.vae is None:
        raise UserError("a pixel-space model has no VAE; diffusers' GLIGEN pipeline needs one")
    if adapters is not None:
        load_adapters(comps.unet, adapters)
    pipe = gligen_pipeline(comps, scheduler)
    quiet_libraries()
    usage = SDXL_USAGE if comps.arch == SDXL else USAGE
    with atomic_output_dir(out, kind=KIND) as tmp:
        pipe.save_pretrained(tmp)
        for sub in ("tokenizer", "tokenizer_2"):
            if (tmp / sub).is_dir():
                copy_tokenizer(comps.path / sub, tmp / sub)
        (tmp / "README.md").write_text(usage.format(model=model, adapters=adapters, out=out))
    return out
