"""Adapter training from the encode cache against encoding images every step (goal: >= 2x).

One run on the tiny model: it writes a dataset of photo-sized JPEGs (640x480, as COCO's),
encodes the cache once, then trains adapters alternately from the cache and from the
images, each training run in a fresh child process so its peak memory is its own. It
reports median steps/s per variant and their ratio, parameters trained, peak memory,
and the encode throughput.

What the cache can save is what an images-path step spends outside the UNet, so the
bench also reports where that step's time goes (measured in the training runs: batch
fetch, VAE encoder, text encoder, the rest) and, from ``bench/step_flops.py``, the FLOPs
of the VAE encoder and text encoder next to the UNet's adapter step for the bench's
model and for SD1.5 at 512 px: the tiny model's proportions are SD's, not flattering.

    python bench/train.py                      # defaults: 64 images, batch 8, 60 steps, 3 repeats
    python bench/train.py --threads 1 --json bench_train.json

``--arch sdxl`` instead times adapter steps from the cache on the tiny SDXL model next to
the tiny SD 1.x model (same photos, same batch, alternating child processes): what the
second text encoder's pooled embedding, the time ids, SDXL's deeper transformer stacks
and its 8x larger pixel budget (128 px against 64 px: 1024 against 512, divided by 8)
cost per step.

    python bench/train.py --arch sdxl --steps 30 --json bench_train_sdxl.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_photos(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` 640x480 JPEGs of smooth noise with three boxes each, as a dataset directory."""
    from PIL import Image

    from pipeline.core.dataset import write_dataset
    from pipeline.core.records import assemble

    rng = np.random.default_rng(seed)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(small).resize((640, 480), Image.BICUBIC).save(
            img_dir / f"{i:05d}.jpg", quality=90
        )
    k = 3 * n
    x0, y0 = rng.uniform(0, 0.6, (2, k))
    x1, y1 = x0 + rng.uniform(0.1, 0.4, k), y0 + rng.uniform(0.1, 0.4, k)
    names = np.array(["a red square", "a blue circle", "a green triangle"])[rng.integers(0, 3, k)]
    records = assemble(
        {
            "image_id": [f"photo:{i}" for i in range(n)],
            "source": ["photo"] * n,
            "file": [f"{i:05d}.jpg" for i in range(n)],
            "width": [640] * n,
            "height": [480] * n,
            "captions": [[f"a photo with shapes number {i}"] for i in range(n)],
        },
        {
            "phrase": names,
            "category": names,
            "x0": x0,
            "y0": y0,
            "x1": x1,
            "y1": y1,
            "score": np.ones(k),
            "origin": ["bench"] * k,
            "image_index": np.repeat(np.arange(n), 3),
        },
    )
    out = root / "dataset"
    write_dataset(
        out,
        records,
        None,
        stage="bench",
        inputs=[],
        params={},
        images_in=n,
        boxes_in=k,
        sources={"photo": {"images_root": str(img_dir)}},
    )
    return out


def time_vae(totals: dict) -> None:
    """Add the seconds spent in ``trainer.model.to_latents`` (the VAE encoder) to ``totals``.

    ``train`` times data fetch and the encoders together; this splits the VAE out, so
    text = encoders - VAE. On a GPU the call is synchronised to be measurable.
    """
    import torch

    import trainer.model as tm

    real = tm.to_latents

    def timed(*a, **kw):
        t = time.perf_counter()
        z = real(*a, **kw)
        if z.is_cuda:
            torch.cuda.synchronize(z.device)
        totals["vae_s"] += time.perf_counter() - t
        return z

    tm.to_latents = timed  # encode_batch imports it at call time


def child(args) -> None:
    """One training run; prints its summary as JSON on the last line."""
    from trainer.train import TrainConfig, train

    totals = {"vae_s": 0.0}
    time_vae(totals)
    s = train(
        TrainConfig(
            model=args.model,
            data=args.data,
            out=args.out,
            steps=args.steps,
            batch_size=args.batch_size,
            warmup=1,
            checkpoint_every=10**9,
            monitor_every=0,
            seed=0,
            workers=args.workers,
            resolution=args.resolution,
            mixed_precision=args.mixed_precision,
        )
    )
    s.pop("unet")
    print(json.dumps(s | totals))


def run_child(variant: str, data: Path, work: Path, args, rep: int, model=None) -> dict:
    env = dict(os.environ, GROUNDSET_QUIET="1")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--model",
        str(model or args.model),
        "--data",
        str(data),
        "--out",
        str(work / f"run-{variant}-{rep}"),
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--workers",
        str(args.workers),
        "--mixed-precision",
        args.mixed_precision,
    ]
    if args.resolution:
        cmd += ["--resolution", str(args.resolution)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if r.returncode:
        sys.exit(f"{variant} run failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def step_anatomy(rs: list[dict], steps: int) -> dict:
    """Where a variant's step goes: median seconds per step and median share of the step.

    ``unet_and_optimizer`` is the rest of the step: UNet forward + backward, clipping,
    AdamW, logging. The two ``speedup_*`` figures are derived from these measured parts:
    the ratio a step would gain by dropping the encoders alone, or the batch fetch too.
    """
    parts = []
    for r in rs:
        step = r["elapsed_s"] / steps
        p = {
            "data": r["data_s"] / steps,
            "vae_encoder": r["vae_s"] / steps,
            "text_encoder": (r["encode_s"] - r["vae_s"]) / steps,
            "unet_and_optimizer": (r["elapsed_s"] - r["data_s"] - r["encode_s"]) / steps,
        }
        parts.append(
            {
                "step": step,
                **p,
                **{f"{k}_share": v / step for k, v in p.items()},
                "speedup_if_encoders_removed": step / (step - p["vae_encoder"] - p["text_encoder"]),
                "speedup_if_data_and_encoders_removed": step / p["unet_and_optimizer"],
            }
        )
    return {k: round(statistics.median(p[k] for p in parts), 4) for k in parts[0]}


def compare_archs(args) -> dict:
    """Adapter steps from the cache: tiny SDXL against tiny SD 1.x, as child processes."""
    from trainer.cache import encode_dataset
    from trainer.tiny import write_tiny

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        data = make_photos(work, args.images)
        models, caches, encode_s = {}, {}, {}
        for arch in ("sd1", "sdxl"):
            models[arch] = write_tiny(work / f"model-{arch}", arch=arch)
            t = time.perf_counter()
            caches[arch] = encode_dataset(data, models[arch], work / f"cache-{arch}")
            encode_s[arch] = time.perf_counter() - t
        runs = {"sd1": [], "sdxl": []}
        for rep in range(args.repeats):  # alternate so load drifts hit both alike
            for arch, done in runs.items():
                done.append(run_child(f"{arch}-cache", caches[arch], work, args, rep, models[arch]))
    step_s = {a: statistics.median(1 / r["steps_per_s"] for r in rs) for a, rs in runs.items()}
    peak = (
        "peak_gpu_memory_bytes" if "peak_gpu_memory_bytes" in runs["sd1"][0] else "peak_rss_bytes"
    )
    return {
        "what": "adapter training steps from the encode cache, tiny SDXL vs tiny SD 1.x",
        "images": args.images,
        "image_size": "640x480 JPEG",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "threads": args.threads or "default",
        "load_before": load_before,
        "load_after": os.getloadavg(),
        **{f"step_s_{a}": round(v, 4) for a, v in step_s.items()},
        **{f"img_per_s_{a}": round(args.batch_size / v, 2) for a, v in step_s.items()},
        "sdxl_step_over_sd1": round(step_s["sdxl"] / step_s["sd1"], 2),
        # each repeat's SDXL run next to the SD 1.x run just before it: less load drift
        "sdxl_over_sd1_per_repeat": [
            round(r["steps_per_s"] / x["steps_per_s"], 2) for r, x in zip(runs["sd1"], runs["sdxl"])
        ],
        **{f"trainable_parameters_{a}": rs[0]["trainable_parameters"] for a, rs in runs.items()},
        **{f"unet_parameters_{a}": rs[0]["unet_parameters"] for a, rs in runs.items()},
        **{f"{peak}_{a}": max(r[peak] for r in rs) for a, rs in runs.items()},
        **{f"encode_img_per_s_{a}": round(args.images / v, 2) for a, v in encode_s.items()},
        "all_step_s": {a: [round(1 / r["steps_per_s"], 4) for r in rs] for a, rs in runs.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="OMP threads per run (0 = torch default)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help="diffusers model folder (default: a fresh tiny model)")
    p.add_argument(
        "--resolution", type=int, default=None, help="bucket side (default: the model's)"
    )
    p.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    p.add_argument(
        "--arch",
        default="sd1",
        choices=["sd1", "sdxl"],
        help="sdxl: tiny SDXL's cache step time next to tiny SD 1.x's (see the module doc)",
    )
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.arch == "sdxl":
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        result = compare_archs(args)
        text = json.dumps(result, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text + "\n")
        return

    import step_flops as sf
    import torch

    from trainer.cache import encode_dataset
    from trainer.tiny import write_tiny

    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        if not args.model:
            args.model = str(write_tiny(work / "model"))
        data = make_photos(work, args.images)
        configs = sf.folder_configs(args.model)
        flops = {
            "sd15_512px": sf.flop_shares((sf.SD15_UNET, sf.SD15_VAE, sf.SD15_TEXT), 512),
            "bench_model": sf.flop_shares(configs, args.resolution or sf.own_resolution(configs)),
        }
        t = time.perf_counter()
        cache = encode_dataset(data, args.model, work / "cache", resolution=args.resolution)
        encode_s = time.perf_counter() - t
        runs = {"cache": [], "images": []}
        for rep in range(args.repeats):  # alternate so load drifts hit both variants alike
            for variant, source in (("cache", cache), ("images", data)):
                runs[variant].append(run_child(variant, source, work, args, rep))
    med = {v: statistics.median(r["steps_per_s"] for r in rs) for v, rs in runs.items()}
    peak_key = (
        "peak_gpu_memory_bytes" if "peak_gpu_memory_bytes" in runs["cache"][0] else "peak_rss_bytes"
    )
    result = {
        "model": "tiny (write_tiny)" if "bench-train-" in str(args.model) else str(args.model),
        "images": args.images,
        "image_size": "640x480 JPEG",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "threads": args.threads or "default",
        "steps_per_s_cache": med["cache"],
        "steps_per_s_images": med["images"],
        "img_per_s_cache": med["cache"] * args.batch_size,
        "img_per_s_images": med["images"] * args.batch_size,
        "speedup": med["cache"] / med["images"],
        "goal_2x_met": med["cache"] / med["images"] >= 2.0,
        "trainable_parameters": runs["cache"][0]["trainable_parameters"],
        "unet_parameters": runs["cache"][0]["unet_parameters"],
        f"{peak_key}_cache": max(r[peak_key] for r in runs["cache"]),
        f"{peak_key}_images": max(r[peak_key] for r in runs["images"]),
        "encode_img_per_s": args.images / encode_s,
        # host seconds per step spent fetching batches and running the VAE/text encoder
        # measured seconds per step (median over runs) and shares of the step, per variant
        "step_anatomy": {v: step_anatomy(rs, args.steps) for v, rs in runs.items()},
        # counted FLOPs per image of what the cache removes, next to the UNet's adapter step
        "flops_per_image": flops,
        "all_steps_per_s": {v: [round(r["steps_per_s"], 3) for r in rs] for v, rs in runs.items()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
