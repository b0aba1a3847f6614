"""The ``sample`` stage: draw one image per layout record and write them as a dataset.

The output directory is a dataset whose records are the layouts that were asked for
(boxes cut to the 30 the model takes, the rest counted as rejects) and whose images root
is ``out/images``, so evaluation reads requested boxes and generated pictures together.
Images are drawn per-image-seeded (``trainer.generate``), which is what makes a killed
run resumable: a rerun of the same request redraws only what is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core import defaults
from pipeline.core.atomic import atomic_path
from pipeline.core.dataset import dataset_input_paths, input_entry, read_dataset, write_dataset
from pipeline.core.device import resolve_device
from pipeline.core.errors import UserError
from pipeline.core.hashing import fingerprint, sha256_file, sha256_json
from pipeline.core.outputs import claim_output
from pipeline.core.progress import progress
from pipeline.core.records import BOX, flatten_boxes, reject_rows
from pipeline.core.resumable import JOB_FILE, open_job_dir
from trainer.arch import SDXL, SDXL_REFINER, arch_of_folder
from trainer.diffusion import SAMPLERS
from trainer.generate import generate, grounding_tensors, image_size
from trainer.model import load_adapters, load_components, resolve_model

OVER_MAX_BOXES = "over_max_boxes"
STAGE = "sample"


def select(records: pa.Table, split: str | None, limit: int | None) -> pa.Table:
    if split:
        records = records.filter(pc.equal(records.column("split"), split))
    return records.slice(0, limit) if limit is not None else records


def flat_layouts(records: pa.Table, max_objs: int) -> dict:
    """Per-box columns with owner image and slot, plus which boxes exceed ``max_objs``."""
    fb = flatten_boxes(records)
    phrases = np.asarray(fb.phrase.fill_null("").to_pylist(), dtype=object)
    return {
        "owner": fb.image,
        "slot": fb.index,
        "xyxy": fb.xyxy_as(np.float32),
        "phrase": phrases,
        "over": fb.index >= max_objs,
    }


def first_captions(records: pa.Table) -> list[str]:
    return [c[0] if c else "" for c in records.column("captions").to_pylist()]


def truncate_boxes(records: pa.Table, over: np.ndarray, max_objs: int) -> pa.Table:
    """Keep the first ``max_objs`` boxes of each record (the ones the model was asked for)."""
    fb = flatten_boxes(records)
    values = fb.fields.filter(pa.array(~over))
    offsets = np.concatenate([[0], np.cumsum(np.minimum(np.diff(fb.offsets), max_objs))]).astype(
        np.int32
    )
    new = pa.ListArray.from_arrays(pa.array(offsets), values)
    return records.set_column(records.schema.get_field_index("boxes"), "boxes", new)


def request_key(
    params: dict, model: Path, layouts: Path, adapters: Path | None, refiner: Path | None = None
) -> str:
    """Fingerprint of what is being drawn; images drawn for another request are never reused."""
    key = {
        "params": params,
        # names, sizes and mtimes: a model retrained at the same path differs
        "model": fingerprint(model, by="mtime"),
        "layouts": input_entry(layouts)["sha256"],
        "adapters": sha256_file(adapters) if adapters else None,
    }
    if refiner is not None:
        key["refiner"] = fingerprint(refiner, by="mtime")
    return sha256_json(key)


def check_sdxl_options(model: Path, refiner: Path | None, original_size, crop) -> None:
    """Original size, crop and a refiner mean something to an SDXL model only."""
    arch = arch_of_folder(model)
    if arch != SDXL and (original_size is not None or crop is not None or refiner is not None):
        raise UserError(
            f"--original-size, --crop and --refiner need an SDXL model; {model} is {arch}"
        )
    if refiner is not None and arch_of_folder(refiner) != SDXL_REFINER:
        raise UserError(
            f"--refiner {refiner} is not an SDXL refiner folder (one with text_encoder_2/ "
            "only, whose UNet takes an aesthetic score)"
        )


def check_size(comps, height: int, width: int) -> None:
    """Image sides must divide by the VAE's and the UNet's joint downsampling."""
    from trainer.cache import size_multiple

    m = size_multiple(comps)
    if height < m or width < m or height % m or width % m:
        raise UserError(f"--target-size {height}x{width}: sides must be multiples of {m}")


def finished(out: Path, key: str) -> dict | None:
    """The manifest of a complete earlier run of the same request, if ``out`` holds one."""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("generation", {}).get("request") != key:
        return None
    files = read_dataset(out, columns=["file"]).records.column("file").to_pylist()
    return manifest if all((out / "images" / f).is_file() for f in files) else None


def sample_dataset(
    model: str | Path,
    layouts: str | Path,
    out: str | Path,
    *,
    adapters: str | Path | None = None,
    beta: float = defaults.SCHEDULED_SAMPLING_BETA,
    steps: int = defaults.NUM_INFERENCE_STEPS,
    guidance_scale: float = defaults.GUIDANCE_SCALE,
    scheduler: str = defaults.SAMPLER,
    seed: int = defaults.SEED,
    limit: int | None = None,
    split: str | None = None,
    batch_size: int = defaults.SAMPLE_BATCH_SIZE,
    max_objs: int = defaults.MAX_BOXES,
    device: str = defaults.DEVICE,
    dtype=None,
    size: tuple[int, int] | None = None,
    original_size: tuple[int, int] | None = None,
    crop: tuple[int, int] | None = None,
    refiner: str | Path | None = None,
    refiner_start: float = defaults.REFINER_START,
    overwrite: bool = False,
) -> dict:
    """Draw one image per layout record; write them with their layouts as a dataset directory.

    ``size``, ``original_size`` and ``crop`` are ``(height, width)`` / ``(top, left)``
    pixels (``trainer.generate``); original size and crop condition SDXL models only.
    ``refiner`` is a local SDXL refiner folder that denoises the last
    ``1 - refiner_start`` of the schedule without adapters.

    Images are staged one file at a time beside ``out`` and kept across a killed run (a
    rerun with the same request skips them: each image depends only on its seed), then
    moved into ``out/images`` once the dataset directory is written.
    """
    if not 0.0 <= beta <= 1.0:
        raise UserError(f"--beta must be within [0, 1], got {beta}")
    if scheduler not in SAMPLERS:
        raise UserError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SAMPLERS)}")
    if steps < 1 or batch_size < 1 or (limit is not None and limit < 0):
        raise UserError("--steps and --batch-size must be positive and --limit not negative")
    if not 0.0 < refiner_start < 1.0:
        raise UserError(f"--refiner-start must lie strictly between 0 and 1, got {refiner_start}")
    layouts, out = Path(layouts), Path(out)
    adapters = Path(adapters) if adapters else None
    with claim_output(
        out,
        kind=STAGE,
        inputs=[model, adapters, refiner, *dataset_input_paths(layouts)],
        overwrite=overwrite,
    ):
        model = resolve_model(model)  # a missing model is reported before any other work
        refiner = resolve_model(refiner) if refiner else None
        check_sdxl_options(model, refiner, original_size, crop)
        ds = read_dataset(layouts)
        records = select(ds.records, split, limit)
        params = {
            "model": str(model),
            "adapters": str(adapters) if adapters else None,
            "beta": beta,
            "steps": steps,
            "guidance_scale": guidance_scale,
            "scheduler": scheduler,
            "seed": seed,
            "limit": limit,
            "split": split,
            "max_objs": max_objs,
        }
        sdxl = {"size": size, "original_size": original_size, "crop": crop}
        if refiner is not None:
            sdxl.update(refiner=str(refiner), refiner_start=refiner_start)
        params.update({k: v for k, v in sdxl.items() if v is not None})  # SD1.x keys unchanged
        if adapters is not None and not adapters.is_file():
            raise UserError(
                f"adapter file {adapters} does not exist (train one with `groundset train`)"
            )
        key = request_key(params, model, layouts, adapters, refiner)
        done = finished(out, key)
        if done is not None:
            return done
        comps = load_components(model, gated=True, device=resolve_device(device), dtype=dtype)
        adapter_cfg = load_adapters(comps.unet, adapters) if adapters else {}
        comps.unet.eval()
        height, width = image_size(comps, size)
        check_size(comps, height, width)
        refined = None
        if refiner is not None:
            refined = load_components(refiner, gated=False, device=comps.device, dtype=dtype)
            refined.unet.eval()

        stage_dir = open_job_dir(out.parent / f".{out.name}.images", {"request": key})

        lay = flat_layouts(records, max_objs)
        keep = ~lay["over"]
        captions = first_captions(records)
        names = [f"{i:06d}.png" for i in range(records.num_rows)]
        todo = np.array([not (stage_dir / n).is_file() for n in names], dtype=bool)
        bar = progress(total=int(todo.sum()), desc="sample", unit="img")
        for start in range(0, records.num_rows, batch_size):
            idx = np.arange(start, min(start + batch_size, records.num_rows))
            idx = idx[todo[idx]]
            if not len(idx):
                continue
            sel = keep & np.isin(lay["owner"], idx)
            pos = np.searchsorted(idx, lay["owner"][sel])
            gligen = grounding_tensors(
                comps,
                pos,
                lay["slot"][sel],
                lay["xyxy"][sel],
                lay["phrase"][sel].tolist(),
                len(idx),
                max_objs,
            )
            images, _ = generate(
                comps,
                [captions[i] for i in idx],
                gligen,
                [seed * 1_000_003 + int(i) for i in idx],
                beta=beta,
                steps=steps,
                guidance_scale=guidance_scale,
                scheduler=scheduler,
                size=(height, width),
                original_size=original_size,
                crop=crop or (0, 0),
                refiner=refined,
                refiner_start=refiner_start,
            )
            for i, img in zip(idx, images):
                write_png(stage_dir / names[i], img)
            bar.update(len(idx))
        bar.close()

        result = truncate_boxes(records, lay["over"], max_objs)
        result = result.set_column(
            result.schema.get_field_index("file"), "file", pa.array(names, pa.string())
        )
        for col, side in (("width", width), ("height", height)):
            result = result.set_column(
                result.schema.get_field_index(col),
                col,
                pa.array(np.full(result.num_rows, side, np.int32)),
            )
        over = np.flatnonzero(lay["over"])
        who = lay["owner"][over]
        column = lambda name: records.column(name).to_numpy(zero_copy_only=False)[who].tolist()
        rejects = reject_rows(
            stage=STAGE,
            source=column("source"),
            kind=BOX,
            image_id=column("image_id"),
            file=[names[k] for k in who],
            box_index=lay["slot"][over].astype(np.int64),
            reason=OVER_MAX_BOXES,
            detail=f"the model takes at most {max_objs} boxes",
        )
        images_root = str((out / "images").resolve())
        sources = {
            s: {"images_root": images_root} for s in pc.unique(result.column("source")).to_pylist()
        }
        inputs = [input_entry(layouts)] + ([input_entry(adapters)] if adapters else [])
        manifest = write_dataset(
            out,
            result,
            rejects,
            stage=STAGE,
            inputs=inputs,
            params={**params, "resolution": max(height, width)},
            images_in=records.num_rows,
            boxes_in=len(lay["owner"]),
            sources=sources,
            extra={
                "generation": {
                    "request": key,
                    "adapter_config": adapter_cfg,
                    "image_size": [height, width],
                }
            },
        )
        (stage_dir / JOB_FILE).unlink()
        os.replace(stage_dir, out / "images")
        return manifest


def write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
