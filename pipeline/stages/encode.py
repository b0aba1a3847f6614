"""The encode stage: every image and text through the frozen encoders, once.

Training from the cache then runs neither the VAE nor a text encoder. The dataset is
opened first, so a wrong path fails in a second instead of after torch has loaded.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core import defaults
from pipeline.core.dataset import dataset_input_paths, read_dataset
from pipeline.core.device import resolve_device
from pipeline.core.errors import UserError
from pipeline.core.outputs import claim_output


def encode(
    dataset: str | Path,
    model: str,
    out: str | Path,
    *,
    shard_size: int,
    batch_size: int,
    captions: int,
    device: str = defaults.DEVICE,
    overwrite: bool = False,
    **options,
) -> Path:
    if shard_size < 1 or batch_size < 1 or captions < 0:
        raise UserError("--shard-size and --batch-size must be >= 1, --captions >= 0")
    read_dataset(dataset, columns=["image_id"])
    device = resolve_device(device)
    from trainer.cache import KIND, encode_dataset

    inputs = [*dataset_input_paths(dataset), model]
    with claim_output(out, kind=KIND, inputs=inputs, overwrite=overwrite):
        return encode_dataset(
            dataset,
            model,
            out,
            shard_size=shard_size,
            batch_size=batch_size,
            captions_per_image=captions,
            device=device,
            **options,
        )
