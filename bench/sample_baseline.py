"""The baseline of ``bench/sample.py``: diffusers' own GLIGEN pipeline, one layout per call.

The script a user writes with diffusers alone, run as its own process: open the GLIGEN
folder with ``StableDiffusionGLIGENPipeline.from_pretrained``, read the layouts (caption
and boxes) from the dataset directory's records with pyarrow, and call the pipeline once
per layout (it takes one layout per call) with the settings ``groundset sample`` uses by
default (scheduled sampling beta 0.3, guidance 7.5, the folder's DDIM scheduler), writing
one PNG each.

    python bench/sample_baseline.py GLIGEN_DIR LAYOUTS_DIR OUT_DIR STEPS [DEVICE]

Threads: the caller sets ``OMP_NUM_THREADS`` for both sides alike.
"""

import sys
from pathlib import Path

import pyarrow.parquet as pq
import torch
from diffusers import StableDiffusionGLIGENPipeline


def main() -> None:
    model, layouts, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    steps = int(sys.argv[4])
    device = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    rows = pq.read_table(layouts / "records", columns=["captions", "boxes"]).to_pylist()
    pipe = StableDiffusionGLIGENPipeline.from_pretrained(model, local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for i, row in enumerate(rows):
            image = pipe(
                prompt=row["captions"][0],
                gligen_phrases=[b["phrase"] for b in row["boxes"]],
                gligen_boxes=[[b["x0"], b["y0"], b["x1"], b["y1"]] for b in row["boxes"]],
                gligen_scheduled_sampling_beta=0.3,
                num_inference_steps=steps,
                guidance_scale=7.5,
                generator=torch.Generator(device).manual_seed(i),
            ).images[0]
            image.save(out / f"{i:06d}.png")
    print(f"{len(rows)} images -> {out}")


if __name__ == "__main__":
    main()
