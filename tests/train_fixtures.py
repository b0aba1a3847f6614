"""Tiny generated datasets for the trainer tests (images drawn with PIL, real records)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.core.dataset import write_dataset
from pipeline.core.records import assemble

COLORS = {"red square": (230, 30, 30), "blue square": (30, 30, 230), "green square": (30, 200, 30)}


def make_dataset(
    root: Path, sizes=((48, 32), (32, 32), (32, 48), (40, 32)), boxes_per=2, seed=0
) -> Path:
    """A dataset of coloured rectangles on grey, one record per (width, height) in ``sizes``.

    Each image has ``boxes_per`` boxes whose phrases name the colour drawn inside them,
    so a model can in principle learn the grounding.
    """
    rng = np.random.default_rng(seed)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    names = list(COLORS)
    images = {k: [] for k in ("image_id", "source", "file", "width", "height", "captions", "split")}
    bx = {
        k: []
        for k in ("phrase", "category", "x0", "y0", "x1", "y1", "score", "origin", "image_index")
    }
    for i, (w, h) in enumerate(sizes):
        im = Image.new("RGB", (w, h), (128, 128, 128))
        draw = ImageDraw.Draw(im)
        for b in range(boxes_per):
            x0, y0 = rng.uniform(0, 0.5, 2)
            x1, y1 = x0 + rng.uniform(0.25, 0.5), y0 + rng.uniform(0.25, 0.5)
            name = names[(i + b) % len(names)]
            draw.rectangle([x0 * w, y0 * h, x1 * w - 1, y1 * h - 1], fill=COLORS[name])
            for k, v in (
                ("phrase", name),
                ("category", name.split()[0]),
                ("x0", x0),
                ("y0", y0),
                ("x1", x1),
                ("y1", y1),
                ("score", 1.0),
                ("origin", "test"),
                ("image_index", i),
            ):
                bx[k].append(v)
        file = f"img{i:03d}.png"
        im.save(img_dir / file)
        for k, v in (
            ("image_id", f"synth:{i}"),
            ("source", "synth"),
            ("file", file),
            ("width", w),
            ("height", h),
            ("split", "train"),
            ("captions", [f"picture {i} of squares", f"squares number {i}"]),
        ):
            images[k].append(v)
    records = assemble(images, bx)
    out = root / "dataset"
    write_dataset(
        out,
        records,
        None,
        stage="test",
        inputs=[],
        params={},
        images_in=len(sizes),
        boxes_in=len(bx["x0"]),
        sources={"synth": {"images_root": str(img_dir)}},
    )
    return out


def kill_at_first_checkpoint(cmd: list[str], run: Path, timeout: float) -> int:
    """Run a ``groundset train`` command, SIGKILL it as soon as its first checkpoint is in
    place, and return the step that checkpoint holds (the point a resume starts from)."""
    import os
    import signal
    import subprocess
    import time

    import torch

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt, deadline = run / "checkpoint.pt", time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if ckpt.exists():  # renamed into place, so complete whenever visible
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    return torch.load(ckpt, weights_only=True)["step"]  # plain values only: see checkpoint.py
