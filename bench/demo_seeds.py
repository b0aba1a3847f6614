"""The demo's learning measurement over several training seeds: mean and spread.

One ``dvc repro`` trains the adapters once (``train.seed``), so its AP50 is one draw:
training is not bit-reproducible across CPUs and thread counts, and the seed moves the
figure too. This script reruns the demo's own ``train`` and ``evaluate`` commands, as
``dvc.yaml`` writes them with the values of ``params.yaml``, for each seed, and reports
held-out YOLO-score AP50 at beta 1 against closed gates.

It needs the outputs of one ``dvc repro`` (the base model, ``data/cache``, the held-out
layouts and the detector) and writes only under ``--out``. Run from the repository root:

    python bench/demo_seeds.py --seeds 0 1 2 --out bench/out/demo_seeds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def stage_command(stage: dict, params: dict, *, seed: int, out: Path) -> list[str]:
    """``dvc.yaml``'s command for a stage with ``${...}`` filled from params, redirected."""
    cmd = stage["cmd"]
    flat = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = value

    walk("", params)
    flat["train.seed"] = seed
    for key, value in sorted(flat.items(), key=lambda kv: -len(kv[0])):
        cmd = cmd.replace("${" + key + "}", str(value))
    if "${" in cmd:
        raise SystemExit(f"unfilled parameter in: {cmd}")
    cmd = cmd.replace("runs/train", str(out / "train")).replace("runs/eval", str(out / "eval"))
    return shlex.split(cmd)


def run(argv: list[str]) -> float:
    env = dict(os.environ)
    while "=" in argv[0]:  # leading VAR=value assignments, as the shell reads them
        key, value = argv.pop(0).split("=", 1)
        env[key] = value
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, check=True)
    return time.perf_counter() - start


def ap50(summary_file: Path) -> dict:
    """Held-out AP50 from evaluate's headline file (the one ``dvc metrics show`` prints)."""
    summary = json.loads(summary_file.read_text())
    return {
        "trained_beta1": summary["beta_1"]["ap50"],
        "closed_gates": summary["closed_gates"]["ap50"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/demo_seeds")
    ap.add_argument(
        "--threads", type=int, help="torch threads (default: params.yaml's cpu_threads)"
    )
    ap.add_argument("--betas", default="1.0", help="betas to evaluate (the headline is 1.0)")
    args = ap.parse_args()
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["evaluate"]["betas"] = args.betas
    if args.threads:
        params["cpu_threads"] = args.threads
    results = {}
    for seed in args.seeds:
        out = args.out.resolve() / f"seed-{seed}"
        done = out / "eval" / "summary.json"
        if not done.is_file():  # a rerun picks up where a killed run stopped
            t_train = run(stage_command(stages["train"], params, seed=seed, out=out))
            t_eval = run(stage_command(stages["evaluate"], params, seed=seed, out=out))
            (out / "timing.json").write_text(json.dumps({"train_s": t_train, "eval_s": t_eval}))
        results[seed] = {**ap50(done), **json.loads((out / "timing.json").read_text())}
        print(f"seed {seed}: {results[seed]}", flush=True)
    trained = [r["trained_beta1"] for r in results.values()]
    closed = [r["closed_gates"] for r in results.values()]
    summary = {
        "seeds": results,
        "trained_beta1": {
            "mean": statistics.mean(trained),
            "min": min(trained),
            "max": max(trained),
            "stdev": statistics.stdev(trained) if len(trained) > 1 else 0.0,
        },
        "closed_gates": {"mean": statistics.mean(closed), "max": max(closed)},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "cpu_threads": params["cpu_threads"],
            "load_at_end": os.getloadavg(),
        },
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("trained_beta1", "closed_gates")}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
