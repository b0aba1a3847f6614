"""``groundset encode``: the latent and text-embedding cache training reads."""

from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import Device, Overwrite
from pipeline.core import defaults

Opt = typer.Option


def encode_command(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory whose images to encode.")],
    model: Annotated[
        str, Opt("--model", help="Diffusers SD1.x or SDXL model folder (VAE + text encoders).")
    ],
    out: Annotated[
        Path, Opt("--out", help="Cache directory to write (or finish, if interrupted).")
    ],
    resolution: Annotated[
        int | None,
        Opt(
            "--resolution",
            help="Pixel count of the buckets is about RESOLUTION^2 [default: the model's own].",
        ),
    ] = None,
    shard_size: Annotated[
        int, Opt("--shard-size", help="Samples per shard (the unit of resume).")
    ] = defaults.CACHE_SHARD_SIZE,
    batch_size: Annotated[
        int, Opt("--batch-size", help="Images per encoder batch.")
    ] = defaults.ENCODE_BATCH_SIZE,
    captions: Annotated[
        int, Opt("--captions", help="Captions embedded per image (0 = all).")
    ] = defaults.CACHE_CAPTIONS,
    dtype: Annotated[
        str, Opt("--dtype", help="float16 or float32 storage.")
    ] = defaults.CACHE_DTYPE,
    min_area: Annotated[
        float, Opt("--min-box-area", help="Boxes under this fraction of the crop are dropped.")
    ] = defaults.MIN_BOX_AREA,
    seed: Annotated[
        int, Opt("--seed", help="Seed of the (fixed) crop of each image.")
    ] = defaults.SEED,
    device: Device = defaults.DEVICE,
    overwrite: Overwrite = False,
) -> None:
    """Precompute VAE latents (and their mirrored copies), caption and phrase embeddings.

    Training from the cache runs neither the VAE nor the text encoder. Each image's bucket and crop are fixed here; flips, caption choice and drops stay random at training time. A killed run started again skips the shards already written.
    """
    from pipeline.stages.encode import encode

    path = encode(
        dataset,
        model,
        out,
        resolution=resolution,
        shard_size=shard_size,
        batch_size=batch_size,
        captions=captions,
        dtype=dtype,
        min_area=min_area,
        seed=seed,
        device=device,
        overwrite=overwrite,
    )
    typer.echo(f"encode: cache -> {path}")


def register(app: typer.Typer) -> None:
    app.command("encode")(encode_command)
