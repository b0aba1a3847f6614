"""Time whole commands as child processes, interleaved, for the benchmarks' headline lines.

A user runs ``groundset ingest ...`` as a process: interpreter start, imports, reading,
computing, writing and reporting all count. An in-process timing of an inner function
leaves most of that out and flatters whichever side has the heavier imports. So the
headline of ``bench/ingest.py``, ``bench/label.py`` and ``bench/sample.py`` spawns each
contender as a fresh child process on the same inputs, alternates them run by run (so
load from other people's work hits both alike), and takes from ``os.wait4``:

- wall seconds, spawn to exit;
- CPU seconds (user + sys of the child and the children it waited for, e.g. dask
  workers): less sensitive than wall time to what else runs on the machine;
- peak RSS of the child (``ru_maxrss``; for a process tree, the largest single process).

Each child is started by a small launcher process, which spawns it and reads its
``wait4``: Linux records a process's peak RSS across ``exec`` starting from the memory
it was forked with, so a child spawned straight from this (often large) benchmark
process reported the benchmark's own size whenever that was larger than its peak (a
``python -c pass`` from an 800 MB parent: 789 MiB; through the launcher: 10 MiB).

The load average before and after is part of every result, because on a shared machine
it moves the wall times more than anything the code does.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"  # gitignored


# Spawns argv[1:] with stdout to /dev/null, waits for it, prints its exit status, wall
# seconds, CPU seconds and peak RSS (KiB) on stdout; ``-S`` keeps the launcher small.
LAUNCHER = """
import os, sys, time
t0 = time.perf_counter()
null = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ, file_actions=null)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
code = os.waitstatus_to_exitcode(status)
print(code, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss)
"""


PACKAGES = ("pipeline", "analysis", "trainer", "detectors")
_compiled = False


def compile_project() -> None:
    """Bytecode for the project's modules, once, as a user's first run leaves it (and as
    pip leaves an installed package's). Where ``PYTHONDONTWRITEBYTECODE`` is set, as on
    this machine, no run ever writes it, and every child compiled every project module it
    imported from source: 0.03-0.04 s of a 1.1 s ``groundset audit``."""
    global _compiled
    if not _compiled:
        import compileall

        root = Path(__file__).resolve().parent.parent
        for package in PACKAGES:
            compileall.compile_dir(root / package, quiet=1)
        _compiled = True


def run_child(argv: list[str], env: dict | None = None, ok=(0,)) -> dict:
    """One child process: wall and CPU seconds, peak RSS in MiB. Exits on failure."""
    compile_project()
    proc = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, *argv],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    try:
        code, wall, cpu, rss_kib = proc.stdout.split()
    except ValueError:
        raise SystemExit(f"could not start {argv[0]}: {proc.stderr.strip()[-2000:]}") from None
    if int(code) not in ok:
        raise SystemExit(f"{' '.join(argv[:4])} ... exited {code}: {proc.stderr.strip()[-2000:]}")
    return {
        "wall_s": round(float(wall), 3),
        "cpu_s": round(float(cpu), 3),
        "peak_rss_mib": round(int(rss_kib) / 1024, 1),  # Linux reports KiB
    }


def load() -> list[float]:
    """1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def interleaved(
    methods: dict[str, list[str]],
    repeats: int,
    env: dict | None = None,
    ok=(0,),
    before=None,
    after=None,
) -> dict:
    """Run every method once per round, ``repeats`` rounds; summaries plus the load.

    ``before(name)``, when given, runs before each child (e.g. to remove its output);
    ``after(name)`` after it, returning a dict of extra figures for that run (e.g. read
    from the output's manifest) or None.
    """
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    load_before = load()
    for r in range(repeats):
        for name, argv in methods.items():
            if before:
                before(name)
            res = run_child(argv, env=env, ok=ok)
            res.update((after and after(name)) or {})
            runs[name].append(res)
            print(
                f"  run {r + 1}: {name:34s} {res['wall_s']:8.2f} s wall {res['cpu_s']:8.2f} s "
                f"CPU  peak RSS {res['peak_rss_mib']:7.0f} MiB  load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    return {
        "repeats": repeats,
        "load_before": load_before,
        "load_after": load(),
        "cpus": os.cpu_count(),
        "methods": {name: summarise(rs) for name, rs in runs.items()},
    }


def summarise(runs: list[dict]) -> dict:
    return {
        "median_wall_s": round(statistics.median(r["wall_s"] for r in runs), 3),
        "median_cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 3),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "runs": runs,
    }


def ratios(result: dict, baseline: str, ours: str) -> dict:
    """baseline / ours for wall and CPU medians (> 1: ours is faster)."""
    b, o = result["methods"][baseline], result["methods"][ours]
    return {
        "wall": round(b["median_wall_s"] / o["median_wall_s"], 3),
        "cpu": round(b["median_cpu_s"] / o["median_cpu_s"], 3),
    }


def load_line(result: dict) -> str:
    lb, la = result["load_before"], result["load_after"]
    return f"load average {lb[0]:.2f} -> {la[0]:.2f} on {result['cpus']} cores"


def write_json(name: str | Path, data: dict) -> Path:
    """Write ``data`` to ``name`` (a relative name lands under ``bench/out/``)."""
    path = OUT / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
