"""The harm sweep's figures and table, from the arms' ``arm.json`` files (docs/harm.md).

Each arm of the sweep is a DVC experiment whose ``runs/harm/arm.json`` holds its share,
its mix, and per beta the YOLO score, the audit's grid score of the detections and the
tiling scores (``pipeline.stages.harm_score``). This stage reads any number of those
files and writes:

* ``tiling_vs_share.png``: tiling against the contamination share, one line per beta;
  the cure arm (trained on the audit-filtered data) is a separate marker;
* ``tradeoff.png``: AP50 against tiling across the betas of the most contaminated arm
  (the seed observation: lowering beta hides tiling at the cost of layout fidelity);
* ``table.md``: one row per arm and beta, the numbers behind both plots;
* ``samples.png``: the arms' sample strips stacked, labelled by arm.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from PIL import Image, ImageDraw

from pipeline.core.atomic import atomic_output_dir, scratch_dir
from pipeline.core.errors import UserError
from pipeline.stages.harm_score import object_counts, per_image_name

KIND = "harm-plots"
METRIC = "tiling_model_res"  # the score the plots use (harm_score: at the model's resolution)
COLUMNS = (
    ("tiling_model_res", "tiling (model res.)"),
    ("tiling_model_res_share", "tiled share"),
    ("tiling_score", "tiling (evaluate)"),
    ("grid_score", "grid score of detections"),
    ("grid_judged_images", "images judged"),
    ("objects_per_image", "objects per image"),
    ("extra_objects_share", "share with extra objects"),
    ("ap50", "AP50"),
)


def load_arms(paths: list[Path]) -> list[dict]:
    """Each ``arm.json`` (or a folder holding one), with its name and sample strip."""
    arms = []
    for p in paths:
        f = p / "arm.json" if p.is_dir() else p
        try:
            arm = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{f}: not a harm-score arm.json ({e})") from None
        if not isinstance(arm, dict) or not {"betas", "share"} <= set(arm):
            raise UserError(f"{f}: not a harm-score arm.json (no betas or share)")
        arm["name"] = label(arm)
        _judged_from_eval(arm, f.parent / "eval_metrics.json")
        _objects_from_eval(arm, f.parent)
        strip = f.parent / "samples.png"
        arm["strip"] = strip if strip.is_file() else None
        arms.append(arm)
    if not arms:
        raise UserError("no arm.json given")
    return sorted(arms, key=lambda a: (a.get("remediated", False), a["share"]))


ARM_FILES = ("runs/harm/arm.json", "runs/harm/samples.png")  # dvc.yaml's harm_score outs
EVAL_DIR = "runs/harm/eval"  # harm_eval's out
EVAL_METRICS = f"{EVAL_DIR}/metrics.json"


def experiment_revs(names: list[str], repo: Path) -> dict[str, str]:
    """Commit of each named DVC experiment (refs/exps/.../<name>); the newest one wins."""
    refs = subprocess.run(
        ["git", "for-each-ref", "--sort=creatordate", "--format=%(refname) %(objectname)"]
        + ["refs/exps"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split("\n")
    found = {}
    for line in filter(None, refs):
        ref, sha = line.split()
        found[ref.rsplit("/", 1)[-1]] = sha
    missing = [n for n in names if n not in found]
    if missing:
        raise UserError(f"no DVC experiment named {missing[0]!r} in {repo} (see dvc exp show)")
    return {n: found[n] for n in names}


def fetch_experiments(names: list[str], repo: Path, into: Path) -> list[Path]:
    """Each experiment's arm.json and sample strip, read from the DVC cache at its commit
    (runs/ is git-ignored, so the files live in the cache, named by the commit's dvc.lock)."""
    import dvc.api

    folders = []
    for name, rev in experiment_revs(names, repo).items():
        folder = into / name
        folder.mkdir(parents=True)
        for path in (*ARM_FILES, EVAL_METRICS):
            data = dvc.api.read(path, repo=str(repo), rev=rev, mode="rb")
            name = "eval_metrics.json" if path == EVAL_METRICS else Path(path).name
            (folder / name).write_bytes(data)
        for beta in json.loads((folder / "arm.json").read_text()).get("betas", {}):
            csv_name = f"{per_image_name(beta)}.csv"
            data = dvc.api.read(f"{EVAL_DIR}/per_image/{csv_name}", repo=str(repo), rev=rev)
            (folder / csv_name).write_text(data)
        folders.append(folder)
    return folders


def _judged_from_eval(arm: dict, metrics: Path) -> None:
    """Fill ``grid_judged_images`` from the evaluation's metrics where the arm lacks it
    (arm.json files written before harm-score recorded it)."""
    if not metrics.is_file():
        return
    runs = json.loads(metrics.read_text()).get("runs", {})
    for beta, row in arm["betas"].items():
        run = runs.get(f"beta={float(beta):g}", {})
        if row.get("grid_judged_images") is None and "grid_judged_images" in run:
            row["grid_judged_images"] = run["grid_judged_images"]


def _objects_from_eval(arm: dict, folder: Path) -> None:
    """Fill the object counts from the evaluation's per-image scores where the arm lacks
    them (arm.json files written before harm-score counted objects)."""
    for beta, row in arm["betas"].items():
        per_image = folder / f"{per_image_name(beta)}.csv"
        if row.get("objects_per_image") is None and per_image.is_file():
            row.update(object_counts(per_image.read_text()))


def label(arm: dict) -> str:
    name = f"{arm['share'] * 100:g}% grid-like"
    return f"{name}, audit-filtered" if arm.get("remediated") else name


def _fmt(v) -> str:
    if isinstance(v, int):
        return str(v)
    return "n/a" if v is None else f"{v:.3f}"


def table(arms: list[dict]) -> str:
    head = ["arm", "trained on", "beta", *(t for _, t in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in arms:
        src = arm.get("trained_on", {}).get("sources", {})
        what = ", ".join(f"{n} {s}" for s, n in src.items())
        for beta in sorted(arm["betas"], key=float, reverse=True):
            row = arm["betas"][beta]
            cells = [arm["name"], what, beta, *(_fmt(row.get(k)) for k, _ in COLUMNS)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# The two effects plotted: seams and repeats (tiling), and objects nobody asked for (the
# lattice habit of filling the frame, which shows in this demo where seams do not).
PANELS = (
    (METRIC, "tiling score of generated images"),
    ("extra_objects_share", "share of images with extra objects"),
)


def _value(row: dict, key: str) -> float:
    v = row.get(key)
    return float("nan") if v is None else float(v)


def plot_tiling_vs_share(arms: list[dict], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    plain = [a for a in arms if not a.get("remediated")]
    betas = sorted({b for a in plain for b in a["betas"]}, key=float)
    for ax, (key, title) in zip(axes, PANELS):
        for i, beta in enumerate(betas):
            pts = [(a["share"], _value(a["betas"][beta], key)) for a in plain if beta in a["betas"]]
            ax.plot(*zip(*pts), "o-", color=f"C{i}", label=f"beta {beta}")
            for a in arms:
                if a.get("remediated") and beta in a["betas"]:
                    y = _value(a["betas"][beta], key)
                    ax.plot(a["share"], y, "*", ms=13, color=f"C{i}")
        if any(a.get("remediated") for a in arms):
            ax.plot([], [], "*", ms=13, color="grey", label="audit-filtered (cure)")
        ax.set_xlabel("share of grid-like training images")
        ax.set_ylabel(title)
        ax.set_ylim(-0.02, 1.02)  # the whole range: a flat zero must look flat
        ax.legend(fontsize=8)
    fig.suptitle("generated images on natural held-out layouts, against contamination")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_tradeoff(arm: dict, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    betas = sorted(arm["betas"], key=float)
    y = [_value(arm["betas"][b], "ap50") for b in betas]
    for ax, (key, title) in zip(axes, PANELS):
        x = [_value(arm["betas"][b], key) for b in betas]
        ax.plot(x, y, "o-", color="C3")
        for b, xi, yi in zip(betas, x, y):
            ax.annotate(f"beta {b}", (xi, yi), textcoords="offset points", xytext=(5, 5))
        ax.set_xlabel(title)
        ax.set_ylabel("AP50 (layout following)")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(bottom=0)
    fig.suptitle(f"scheduled-sampling trade-off, {arm['name']}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def stack_samples(arms: list[dict], path: Path) -> bool:
    """The arms' strips one under another, each titled by its arm and each row by its
    beta (harm_score draws one row per beta, lowest first)."""
    strips = [(a, Image.open(a["strip"]).convert("RGB")) for a in arms if a["strip"]]
    if not strips:
        return False
    head, margin = 14, 58
    width = margin + max(s.width for _, s in strips)
    canvas = Image.new("RGB", (width, sum(s.height + head for _, s in strips)), "white")
    draw, y = ImageDraw.Draw(canvas), 0
    for arm, s in strips:
        draw.text((2, y + 1), arm["name"], fill=(0, 0, 0))
        betas = sorted(arm["betas"], key=float)
        row = s.height / max(1, len(betas))
        for i, beta in enumerate(betas):
            draw.text((2, y + head + int(i * row + row / 2) - 5), f"beta {beta}", fill=(0, 0, 0))
        canvas.paste(s, (margin, y + head))
        y += s.height + head
    canvas.save(path)
    return True


def harm_plots(
    paths: list[str | Path],
    out: str | Path,
    *,
    experiments: list[str] = (),
    repo: str | Path = ".",
    keep: str | Path | None = None,
) -> dict:
    """Write the figures and the table into ``out`` (atomically) and return what was drawn.

    ``experiments`` names DVC experiments whose arm files are read from the cache; with
    ``keep`` their arm.json and samples.png are also copied there (for docs)."""
    paths = [Path(p) for p in paths]
    if experiments:
        out = Path(out)  # a scratch name the output's own leftover sweep never matches
        with scratch_dir(out.with_name(f"{out.name}-experiments")) as tmp:
            fetched = fetch_experiments(list(experiments), Path(repo), tmp)
            if keep is not None:
                for f in fetched:
                    target = Path(keep) / f.name
                    target.mkdir(parents=True, exist_ok=True)
                    for file in f.iterdir():
                        (target / file.name).write_bytes(file.read_bytes())
            return _draw([*paths, *fetched], Path(out))
    return _draw(paths, Path(out))


def _draw(paths: list[Path], out: Path) -> dict:
    arms = load_arms(paths)
    plain = [a for a in arms if not a.get("remediated")]
    if not plain:
        raise UserError("every arm given is a remediated one; the sweep needs plain arms")
    worst = max(plain, key=lambda a: a["share"])
    with atomic_output_dir(out, kind=KIND) as tmp:
        (tmp / "table.md").write_text(table(arms))
        plot_tiling_vs_share(arms, tmp / "tiling_vs_share.png")
        plot_tradeoff(worst, tmp / "tradeoff.png")
        samples = stack_samples(arms, tmp / "samples.png")
    return {"arms": [a["name"] for a in arms], "tradeoff_arm": worst["name"], "samples": samples}
