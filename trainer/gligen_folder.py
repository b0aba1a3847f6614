"""Merge a base model and trained adapters into a diffusers GLIGEN pipeline folder.

Adapters alone are small and tied to their base model; people who just want to draw
layouts expect a folder that ``StableDiffusionGLIGENPipeline.from_pretrained`` opens, like
the published GLIGEN checkpoints. This writes exactly that (gated UNet with the adapters
in it, the base VAE / text encoder / tokenizer, a DDIM or DPM-Solver scheduler built from
the training schedule), and ``load_components`` reads it back as a GLIGEN folder.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core import defaults as D
from pipeline.core.atomic import atomic_output_dir
from pipeline.core.errors import UserError
from trainer.diffusion import make_sampler
from trainer.model import load_adapters, load_components
from trainer.quiet import quiet_libraries

KIND = "export-gligen"  # the output kind of this folder (pipeline.core.outputs)
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


def gligen_pipeline(comps, scheduler: str = D.SAMPLER):
    """diffusers' own GLIGEN pipeline over our components, with no safety checker."""
    from diffusers.pipelines.deprecated.stable_diffusion_gligen import (
        StableDiffusionGLIGENPipeline,
    )

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
    with atomic_output_dir(out, kind=KIND) as tmp:
        pipe.save_pretrained(tmp)
        (tmp / "README.md").write_text(USAGE.format(model=model, adapters=adapters, out=out))
    return out
