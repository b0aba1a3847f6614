"""Optional FID between generated samples and the real images of the same layouts.

FID needs Inception-v3 weights, and groundset never downloads weights: the user passes a
local torchvision ``inception_v3`` state dict (``inception_v3_google-0cc3c7bd.pth``).
Without it the evaluation says plainly that FID was skipped. Note that FID over a few
hundred images is biased upward and only comparable between runs of the same size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.eval_score import image_paths
from pipeline.core.errors import UserError
from pipeline.core.images import read_rgb
from pipeline.core.progress import progress

WEIGHTS_HELP = (
    "pass a local torchvision Inception-v3 state dict, e.g. inception_v3_google-0cc3c7bd.pth "
    "from https://download.pytorch.org/models/ (groundset never downloads weights)"
)
SIZE = 299
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def load_inception(weights: str | Path):
    import torch
    from torchvision.models import inception_v3

    p = Path(weights)
    if not p.is_file():
        raise UserError(f"Inception weights {p} not found; {WEIGHTS_HELP}")
    model = inception_v3(weights=None, aux_logits=True, init_weights=False)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        raise UserError(
            f"{p} is not an Inception-v3 state dict: {str(e).splitlines()[0]}"
        ) from None
    model.fc = torch.nn.Identity()  # the 2048-d pool features FID is defined on
    return model.eval()


def features(model, paths: list, batch_size: int = 16, desc: str = "fid") -> np.ndarray:
    import torch
    from PIL import Image

    out = []
    for start in progress(range(0, len(paths), batch_size), desc=desc):
        batch = [
            np.asarray(
                Image.fromarray(read_rgb(p)).resize((SIZE, SIZE), Image.BILINEAR), np.float32
            )
            for p in paths[start : start + batch_size]
        ]
        x = (np.stack(batch) / 255.0 - MEAN) / STD
        with torch.no_grad():
            out.append(model(torch.from_numpy(x).permute(0, 3, 1, 2).float()).numpy())
    return np.concatenate(out).astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        eps = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fid_against(real, runs: dict, weights, batch_size: int = 16) -> dict:
    """FID of every run's images against the real images of the same layouts."""
    model = load_inception(weights)
    ref = features(model, image_paths(real), batch_size, desc="fid real")
    values = {
        name: frechet_distance(
            ref, features(model, image_paths(ds), batch_size, desc=f"fid {name}")
        )
        for name, ds in runs.items()
    }
    return {"status": "computed", "weights": str(weights), "n_real": len(ref), "values": values}
