"""The harm sweep's summaries: the tiling score at the model's resolution, the plots."""

import json

import numpy as np
import pytest

from pipeline.core.errors import UserError
from pipeline.stages.harm_plots import harm_plots, table
from pipeline.stages.harm_score import (
    model_res_tiling,
    object_counts,
    per_image_name,
    working_size,
)

SIDE = 32  # the demo model's image side


def _scene(rng, tiles: int) -> np.ndarray:
    """A 32 px picture as the demo draws them: grey background(s) with the light ramp
    (red left to right, blue top to bottom) and a few flat blobs; ``tiles`` > 1 makes
    it a mosaic, each tile a whole small scene with its own grey and its own ramp."""
    out = np.zeros((SIDE, SIDE, 3))
    edges = np.linspace(0, SIDE, tiles + 1).astype(int)
    for r in range(tiles):
        for c in range(tiles):
            h, w = edges[r + 1] - edges[r], edges[c + 1] - edges[c]
            tile = np.full((h, w, 3), rng.integers(105, 160), float)
            tile[:, :, 0] += 60 * ((np.arange(w) + 0.5) / w - 0.5)[None, :]
            tile[:, :, 2] += 60 * ((np.arange(h) + 0.5) / h - 0.5)[:, None]
            y, x = rng.integers(0, max(1, h - 4)), rng.integers(0, max(1, w - 4))
            tile[y : y + 4, x : x + 4] = rng.integers(20, 235, 3)
            out[edges[r] : edges[r + 1], edges[c] : edges[c + 1]] = tile
    return np.clip(out, 0, 255).astype(np.uint8)


def test_working_size_enlarges_small_images_twice_only():
    assert working_size(32) == 64 and working_size(48) == 96
    assert working_size(64) == working_size(640) == 256  # the calibrated path


def test_model_res_tiling_sees_32px_mosaics_not_single_scenes():
    rng = np.random.default_rng(0)
    mosaics = [_scene(rng, int(rng.choice([2, 3]))) for _ in range(20)]
    scenes = [_scene(rng, 1) for _ in range(20)]
    tiled, plain = model_res_tiling(mosaics), model_res_tiling(scenes)
    assert tiled["tiling_model_res_share"] >= 0.8, tiled
    assert plain["tiling_model_res_share"] <= 0.1, plain
    assert np.isnan(model_res_tiling([])["tiling_model_res"])


def test_object_counts_and_the_per_image_file_name():
    csv = "image_id,n_requested,n_objects\na,2,2\nb,1,3\nc,3,0\nd,2,3\n"
    assert object_counts(csv) == {"objects_per_image": 2.0, "extra_objects_share": 0.5}
    assert object_counts("image_id,n_requested,n_objects\n")["objects_per_image"] is None
    assert per_image_name("1") == per_image_name("1.0") == "beta_1"  # as evaluate saves it
    assert per_image_name("0.3") == "beta_0.3"


def _arm(share, remediated=False, tiling=(0.1, 0.2)):
    betas = {
        b: {
            "ap50": 0.5 - t,
            "grid_score": 0.3,
            "grid_share": 0.1,
            "tiling_score": 0.0,
            "tiling_share": 0.0,
            "tiling_model_res": t,
            "tiling_model_res_share": t,
        }
        for b, t in zip(("0.3", "1"), tiling)
    }
    src = {"demo-natural": round(400 * (1 - share)), "mosaic": round(400 * share)}
    return {
        "share": share,
        "remediated": remediated,
        "betas": betas,
        "trained_on": {"sources": src},
        "mix": {},
    }


def test_plots_and_table_from_arm_files(tmp_path):
    paths = []
    for i, (share, rem) in enumerate(((0.0, False), (0.5, False), (1.0, False), (1.0, True))):
        (tmp_path / f"a{i}").mkdir()
        (tmp_path / f"a{i}" / "arm.json").write_text(json.dumps(_arm(share, rem)))
        paths.append(tmp_path / f"a{i}")
    done = harm_plots(paths, tmp_path / "out")
    assert done["tradeoff_arm"] == "100% grid-like" and not done["samples"]
    for f in ("table.md", "tiling_vs_share.png", "tradeoff.png"):
        assert (tmp_path / "out" / f).stat().st_size > 0
    rows = (tmp_path / "out" / "table.md").read_text().splitlines()
    assert len(rows) == 2 + 4 * 2  # header, rule, one row per arm and beta
    assert any(r.startswith("| 100% grid-like, audit-filtered |") for r in rows)


def test_table_says_na_for_missing_scores():
    arm = _arm(0.25)
    arm["betas"]["1"]["grid_score"] = None
    arm["name"] = "x"
    assert "| n/a |" in table([arm])


def test_a_file_that_is_no_arm_is_one_line(tmp_path):
    (tmp_path / "arm.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="not a harm-score arm.json"):
        harm_plots([tmp_path / "arm.json"], tmp_path / "out")
    with pytest.raises(UserError, match="no DVC experiment"):
        harm_plots([], tmp_path / "out2", experiments=["nope"], repo=tmp_path)
