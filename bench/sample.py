"""Generation throughput: groundset's batched sampler against diffusers' GLIGEN pipeline.

diffusers' ``StableDiffusionGLIGENPipeline`` takes one layout per call, so drawing N
different layouts costs N calls; ``trainer.generate`` puts a different layout in every
batch slot. Both run the same UNet, scheduler and guidance, on the tiny model by default.

    python bench/sample.py [--n 16] [--batch 8] [--steps 20] [--repeats 3] [--threads 1]

Prints the median seconds and images/s of each, and their ratio, from one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: tiny)")
    ap.add_argument("--n", type=int, default=16, help="layouts to draw")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from trainer.generate import generate, grounding_tensors
    from trainer.gligen_folder import gligen_pipeline
    from trainer.model import default_device, load_components
    from trainer.tiny import write_tiny

    device = args.device or default_device()
    model = args.model or write_tiny(Path(tempfile.mkdtemp()) / "tiny")
    comps = load_components(model, device=device)
    rng = np.random.default_rng(0)
    k = 3  # boxes per layout
    xy = rng.uniform(0, 0.5, (args.n, k, 2))
    boxes = np.concatenate([xy, xy + 0.4], axis=-1).astype(np.float32)
    phrases = [["dog", "cat", "car"] for _ in range(args.n)]
    captions = ["a dog, a cat and a car"] * args.n

    def ours():
        for s in range(0, args.n, args.batch):
            idx = np.arange(s, min(s + args.batch, args.n))
            owner = np.repeat(np.arange(len(idx)), k)
            slot = np.tile(np.arange(k), len(idx))
            gl = grounding_tensors(
                comps,
                owner,
                slot,
                boxes[idx].reshape(-1, 4),
                [p for i in idx for p in phrases[i]],
                len(idx),
            )
            generate(comps, [captions[i] for i in idx], gl, idx.tolist(), steps=args.steps)

    pipe = gligen_pipeline(comps, "ddim")

    def theirs():
        for i in range(args.n):
            pipe(
                prompt=captions[i],
                gligen_phrases=phrases[i],
                gligen_boxes=boxes[i].tolist(),
                gligen_scheduled_sampling_beta=0.3,
                num_inference_steps=args.steps,
                generator=torch.Generator().manual_seed(i),
                output_type="np",
            )

    times = {"groundset (batched)": [], "diffusers pipeline (per layout)": []}
    for _ in range(args.repeats):
        for name, fn in zip(times, (ours, theirs)):
            t0 = time.perf_counter()
            with torch.no_grad():
                fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    print(
        f"model={model} device={device} n={args.n} batch={args.batch} steps={args.steps} "
        f"threads={args.threads} repeats={args.repeats}"
    )
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, m in med.items():
        print(f"{name:34s} median {m:7.2f} s  {args.n / m:7.2f} img/s")
    a, b = med.values()
    print(f"speed-up {b / a:.2f}x")


if __name__ == "__main__":
    main()
