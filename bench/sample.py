"""Generation throughput: ``groundset sample`` against diffusers' GLIGEN pipeline, as processes.

diffusers' ``StableDiffusionGLIGENPipeline`` takes one layout per call, so drawing N
different layouts costs N calls; ``groundset sample`` puts a different layout in every
batch slot. Both run the same GLIGEN folder (the tiny model by default, written by
``groundset init-model --tiny`` and ``groundset export-gligen``, gates closed: the gated
layers still run), the same scheduler (DDIM), guidance 7.5, beta 0.3 and step count, on
the same N layouts (3 boxes each, a dataset directory written here).

    python bench/sample.py [--n 16] [--batch 8] [--steps 10] [--repeats 3] [--threads 1]

The headline times whole commands as child processes, interleaved, medians of
``--repeats`` (``bench/processes.py``: wall and CPU seconds, peak RSS, load average before
and after): ``groundset -q sample --model G --layouts L --out ...`` (imports, model load,
reading the layouts, generation, PNG and dataset writes, report) against
``bench/sample_baseline.py`` (``from_pretrained``, a pyarrow read of the same layouts, the
pipeline once per layout, a PNG each). ``OMP_NUM_THREADS`` is ``--threads`` for both.

A second line keeps the older in-process figure: ``trainer.generate`` against the
pipeline built from the same loaded components, model load excluded
(``--inproc-repeats 0`` skips it). Results go to ``bench/out/sample.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from processes import OUT, interleaved, load_line, ratios, write_json

BASE, OURS = "baseline: diffusers GLIGEN pipeline per layout", "groundset sample (batched)"
K = 3  # boxes per layout
PHRASES = ["dog", "cat", "car"]
CAPTION = "a dog, a cat and a car"


def groundset_cli() -> str:
    return shutil.which("groundset", path=str(Path(sys.executable).parent)) or "groundset"


def layouts(n: int, seed: int = 0) -> np.ndarray:
    """N layouts of K boxes (x0, y0, x1, y1), 0.4 wide, at random places."""
    xy = np.random.default_rng(seed).uniform(0, 0.5, (n, K, 2))
    return np.concatenate([xy, xy + 0.4], axis=-1).astype(np.float32)


def layouts_dir(path: Path, boxes: np.ndarray) -> Path:
    """The layouts as a dataset directory (what ``groundset sample --layouts`` reads)."""
    from pipeline.core.dataset import n_boxes, write_dataset
    from pipeline.core.records import assemble

    n = len(boxes)
    m = n * K
    images = {
        "image_id": [f"bench:{i}" for i in range(n)],
        "source": ["bench"] * n,
        "file": [f"{i}.jpg" for i in range(n)],
        "width": np.full(n, 512),
        "height": np.full(n, 512),
        "captions": [[CAPTION]] * n,
        "split": ["val"] * n,
    }
    flat = boxes.reshape(-1, 4)
    box_cols = {
        "image_index": np.repeat(np.arange(n), K),
        "phrase": PHRASES * n,
        "category": PHRASES * n,
        **{c: flat[:, j] for j, c in enumerate(("x0", "y0", "x1", "y1"))},
        "score": np.ones(m, np.float32),
        "origin": ["bench"] * m,
    }
    rec = assemble(images, box_cols)
    write_dataset(
        path,
        rec,
        None,
        stage="bench",
        inputs=[],
        params={"n": n},
        images_in=n,
        boxes_in=n_boxes(rec),
    )
    return path


def prepare(work: Path, n: int) -> tuple[Path, Path, Path]:
    """The tiny model, its GLIGEN folder and the layouts, written once under ``work``."""
    gs = groundset_cli()
    tiny, gligen, lay = work / "tiny", work / "gligen", work / f"layouts-{n}"
    if not (tiny / "model_index.json").is_file():
        subprocess.run([gs, "-q", "init-model", "--tiny", "--out", str(tiny)], check=True)
    if not (gligen / "model_index.json").is_file():
        cmd = [gs, "-q", "export-gligen", "--model", str(tiny), "--out", str(gligen)]
        subprocess.run(cmd, check=True)
    if not (lay / "manifest.json").is_file():
        layouts_dir(lay, layouts(n))
    return tiny, gligen, lay


def processes(args, gligen: Path, lay: Path) -> dict:
    work = args.work
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    steps = str(args.steps)
    methods = {
        BASE: [
            sys.executable,
            str(Path(__file__).with_name("sample_baseline.py")),
            str(gligen),
            str(lay),
            str(work / "baseline-images"),
            steps,
            args.device,
        ],
        OURS: [
            groundset_cli(),
            "-q",
            "sample",
            "--model",
            str(gligen),
            "--layouts",
            str(lay),
            "--out",
            str(work / "groundset-out"),
            "--steps",
            steps,
            "--batch-size",
            str(args.batch),
            "--device",
            args.device,
            "--overwrite",
        ],
    }

    def clear(name):  # each run draws every image afresh (sample resumes otherwise)
        for d in ("baseline-images",) if name == BASE else ("groundset-out", "groundset-out.work"):
            shutil.rmtree(work / d, ignore_errors=True)

    res = interleaved(methods, args.repeats, env=env, before=clear)
    for m in res["methods"].values():
        m["img_per_s"] = round(args.n / m["median_wall_s"], 2)
    res["speedup"] = ratios(res, BASE, OURS)
    return res


def in_process(args, model: Path) -> dict:
    """The older figure: both samplers in this process, model already loaded."""
    import torch

    from trainer.generate import generate, grounding_tensors
    from trainer.gligen_folder import gligen_pipeline
    from trainer.model import load_components

    torch.set_num_threads(args.threads)
    device = args.device
    comps = load_components(model, device=device)
    boxes, k = layouts(args.n), K  # the same layouts as the dataset directory's
    phrases = [PHRASES] * args.n
    captions = [CAPTION] * args.n

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
    for _ in range(args.inproc_repeats):
        for name, fn in zip(times, (ours, theirs)):
            t0 = time.perf_counter()
            with torch.no_grad():
                fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(round(time.perf_counter() - t0, 3))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    g, d = med.values()
    return {
        "repeats": args.inproc_repeats,
        "runs_s": times,
        "groundset_img_per_s": round(args.n / g, 2),
        "diffusers_img_per_s": round(args.n / d, 2),
        "speedup": round(d / g, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="layouts to draw")
    ap.add_argument("--batch", type=int, default=8, help="groundset's --batch-size")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the process loop")
    ap.add_argument("--inproc-repeats", type=int, default=3, help="0 skips the in-process line")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads, both sides")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", type=Path, default=OUT / "sample", help="model, layouts, outputs")
    ap.add_argument("--json", type=Path, default="sample.json", help="relative: under bench/out/")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    tiny, gligen, lay = prepare(args.work, args.n)
    settings = (
        f"n={args.n} batch={args.batch} steps={args.steps} threads={args.threads} "
        f"device={args.device}"
    )
    res = {"model": str(gligen), "settings": settings}
    res["processes"] = pr = processes(args, gligen, lay)
    b, g, r = pr["methods"][BASE], pr["methods"][OURS], pr["speedup"]
    print(
        f"\nas processes ({settings}, median of {args.repeats}, {load_line(pr)}):\n"
        f"  {BASE}: {b['median_wall_s']:.2f} s ({b['img_per_s']:.2f} img/s, "
        f"{b['median_cpu_s']:.1f} s CPU, {b['peak_rss_mib']:.0f} MiB)\n"
        f"  {OURS}: {g['median_wall_s']:.2f} s ({g['img_per_s']:.2f} img/s, "
        f"{g['median_cpu_s']:.1f} s CPU, {g['peak_rss_mib']:.0f} MiB)\n"
        f"  speed-up {r['wall']:.2f}x wall, {r['cpu']:.2f}x CPU time"
    )
    if args.inproc_repeats:
        res["in_process"] = ip = in_process(args, tiny)
        print(
            f"in process, second line (model loaded, median of {ip['repeats']}): diffusers "
            f"{ip['diffusers_img_per_s']:.2f} img/s, trainer.generate "
            f"{ip['groundset_img_per_s']:.2f} img/s -> {ip['speedup']:.2f}x"
        )
    res["loadavg_end"] = list(os.getloadavg())
    print(f"-> {write_json(args.json, res)}")


if __name__ == "__main__":
    main()
