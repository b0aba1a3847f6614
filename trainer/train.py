"""Train GLIGEN's gated adapters (or a whole base UNet) with accelerate. Read top to bottom.

``--mode adapters`` (GLIGEN): the pretrained UNet, VAE and text encoder stay frozen and
only ``fuser`` + ``position_net`` learn. ``--mode base`` fine-tunes a whole plain UNet
(no gates); the demo pretrains its tiny base with it.

Everything random is a function of ``(seed, global batch index)``: which images form
the batch (``BatchOrder``), their crops/flips/drops, and the noise and timesteps. A
checkpoint therefore only needs the trainable weights, the optimiser state and the step;
a run killed with SIGKILL and resumed continues exactly as if it had never stopped, and
N processes (each taking every N-th batch) train as one process accumulating N batches.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.core import defaults as D
from pipeline.core.atomic import atomic_write_text
from pipeline.core.errors import UserError
from pipeline.core.outputs import make_output_dir
from pipeline.core.progress import progress
from trainer.checkpoint import (
    CHECKPOINT,
    read_checkpoint,
    restore_checkpoint,
    save_base_model,
    save_checkpoint,
)
from trainer.objective import diffusion_loss, timestep_weights

ADAPTERS, BASE = D.TRAIN_MODES
KIND = "train"  # the output kind of a run folder (pipeline.core.outputs)


@dataclass
class TrainConfig:
    model: str
    data: str
    out: str
    mode: str = D.TRAIN_MODE
    steps: int = D.TRAIN_STEPS
    batch_size: int = D.BATCH_SIZE
    lr: float = D.LEARNING_RATE
    warmup: int = D.WARMUP_STEPS
    grad_accum: int = D.GRAD_ACCUM
    weight_decay: float = D.WEIGHT_DECAY
    max_grad_norm: float = D.MAX_GRAD_NORM
    resolution: int | None = None  # None: the model's own (sample_size x VAE factor)
    checkpoint_every: int = D.CHECKPOINT_EVERY
    monitor_every: int = D.MONITOR_EVERY
    monitor_samples: int = D.MONITOR_SAMPLES
    monitor_timesteps: tuple = D.MONITOR_TIMESTEPS
    resume: bool = False
    seed: int = D.SEED
    mixed_precision: str = D.MIXED_PRECISION
    caption_drop: float = D.CAPTION_DROP
    grounding_drop: float = D.GROUNDING_DROP
    weights: str | None = None  # Parquet image_id -> sampling weight (the audit's downweights)
    workers: int = D.DATA_WORKERS
    timestep_bias: str = D.TIMESTEP_BIAS
    timestep_bias_multiplier: float = D.TIMESTEP_BIAS_MULTIPLIER
    timestep_bias_portion: float = D.TIMESTEP_BIAS_PORTION
    attn_gate_init: float = D.ATTN_GATE_INIT  # see warm_start_gates


def acc_main_process() -> bool:
    """Whether this is the main process of an `accelerate launch` (or the only one)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("RANK", "0") == "0"


def lr_at(step: int, cfg: TrainConfig) -> float:
    """GLIGEN's schedule: linear warm-up from 0, then constant."""
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))


def warm_start_gates(unet, value: float) -> None:
    """Start every ``alpha_attn`` at ``value`` instead of diffusers' 0.

    The attention weights' gradient is scaled by ``tanh(alpha_attn)``. Zero-initialised,
    alpha random-walks around 0 while the attention is still useless, so that gradient
    keeps flipping sign and the attention never learns to read the layout: after 1,200
    demo steps |alpha| < 0.2 and held-out losses were identical with true, shuffled or
    no boxes. A fixed-sign start breaks that symmetry. 0 keeps GLIGEN's exact recipe.
    """
    if value:
        with torch.no_grad():
            for name, p in unet.named_parameters():
                if name.endswith("fuser.alpha_attn"):
                    p.fill_(value)


def batch_generator(seed: int, index: int, device) -> torch.Generator:
    """Noise and timesteps of a micro-batch depend only on its global batch index.

    So N processes taking every N-th batch draw exactly what one process accumulating N
    micro-batches draws, and a resumed run draws what the uninterrupted one did.
    """
    state = np.random.SeedSequence([seed, 2, index]).generate_state(2, np.uint32)
    return torch.Generator(device).manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def make_source(cfg: TrainConfig, comps, augment, random_crop: bool = True):
    """The cache if ``--data`` is one (no encoders at train time), else the dataset's images."""
    from pipeline.core.dataset import read_dataset
    from trainer.cache import encoders_fingerprint, is_cache, size_multiple
    from trainer.cache_batches import CacheBatches
    from trainer.data import ImageBatches

    if is_cache(cfg.data):
        src = CacheBatches(cfg.data, augment)
        if src.meta.get("encoders_sha256") != encoders_fingerprint(comps.path):
            raise UserError(
                f"{cfg.data} was encoded with another VAE/text encoder than {comps.path}; "
                "encode the data again for this model"
            )
        if cfg.resolution and cfg.resolution != src.meta["params"]["resolution"]:
            raise UserError(
                f"--resolution {cfg.resolution} differs from the cache's "
                f"{src.meta['params']['resolution']}"
            )
        return src
    res = int(cfg.resolution or comps.resolution)
    return ImageBatches(
        read_dataset(cfg.data),
        comps.tokenizer,
        resolution=res,
        multiple=size_multiple(comps),
        augment=augment,
        random_crop=random_crop,
        arch=comps.arch,
        tokenizer_2=comps.tokenizer_2,
    )


@torch.no_grad()
def encode_batch(comps, batch: dict, device, gated: bool):
    """(latents, caption conditioning, gligen kwargs or None) for a batch from either source.

    The conditioning is ``unet_cond``'s dict: SDXL's carries the pooled embedding and the
    time ids of the crop drawn. A dropped caption drops its pooled embedding with it.
    """
    from trainer.model import encode_phrases, to_latents
    from trainer.objective import unet_cond
    from trainer.text import encode_caption_ids

    if "latents" in batch:
        latents, hidden = batch["latents"].to(device), batch["caption_emb"].to(device)
        pooled = batch["pooled_emb"].to(device) if "pooled_emb" in batch else None
        phrase_emb = batch["phrase_emb"].to(device) if gated else None
    else:
        latents = to_latents(comps, batch["pixels"].to(device), sample=False).float()
        hidden, pooled = encode_caption_ids(comps, batch["input_ids"], batch.get("input_ids_2"))
        hidden, pooled = hidden.float(), None if pooled is None else pooled.float()
        if comps.force_zeros_for_empty_prompt:  # as trainer.text.null_captions
            keep = (~batch["caption_dropped"]).to(device, hidden.dtype)
            hidden = hidden * keep[:, None, None]
            pooled = None if pooled is None else pooled * keep[:, None]
        phrase_emb = None
        if gated:
            emb = encode_phrases(comps, batch["phrases"]).float()
            idx = batch["phrase_index"].to(device)
            phrase_emb = torch.zeros(*idx.shape, emb.shape[-1], device=device)
            phrase_emb[idx >= 0] = emb[idx[idx >= 0]]
    ids = None if pooled is None else batch["time_ids"].to(device)
    cap = unet_cond(hidden, pooled, ids)
    if not gated:
        return latents, cap, None
    gligen = {
        "boxes": batch["boxes"].to(device),
        "masks": batch["masks"].to(device),
        "positive_embeddings": phrase_emb,
    }
    return latents, cap, gligen


def monitor_samples(cfg, comps, device, gated):
    from trainer.data import Augment
    from trainer.monitor import DetailMonitor

    src = make_source(cfg, comps, Augment(0.0, 0.0, 0.0), random_crop=False)
    rng = np.random.default_rng(0)
    samples = [
        encode_batch(comps, src(np.array([i]), rng), device, gated)
        for i in range(min(cfg.monitor_samples, len(src)))
    ]
    return DetailMonitor(comps, samples, cfg.monitor_timesteps, seed=cfg.seed)


def trim_metrics(live_dir: Path, step: int) -> None:
    """Drop metric rows logged after the checkpoint a resumed run restarts from.

    A killed run logged steps it will now redo; without this the plots would show each
    of them twice.
    """
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text().splitlines(keepends=True)
        if not lines:
            continue
        col = lines[0].rstrip("\n").split("\t").index("step")
        kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split("\t")[col]) <= step]
        if len(kept) != len(lines):
            atomic_write_text(tsv, "".join(kept))


def peak_memory(device) -> dict:
    """Peak GPU memory allocated by torch, or the process's peak RSS on CPU."""
    if torch.device(device).type == "cuda":
        return {"peak_gpu_memory_bytes": int(torch.cuda.max_memory_allocated(device))}
    import resource

    return {"peak_rss_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024}


def train(cfg: TrainConfig) -> dict:
    if cfg.mode not in (ADAPTERS, BASE):
        raise UserError(f"--mode must be {ADAPTERS} or {BASE}, got {cfg.mode}")
    if min(cfg.steps, cfg.batch_size, cfg.grad_accum, cfg.checkpoint_every) < 1 or cfg.workers < 0:
        raise UserError(
            "--steps, --batch-size, --grad-accum and --checkpoint-every must be >= 1, "
            "--workers >= 0"
        )
    if cfg.mixed_precision not in ("no", "fp16", "bf16"):
        raise UserError(f"--mixed-precision must be no, fp16 or bf16, got {cfg.mixed_precision}")
    timestep_weights(
        1000, cfg.timestep_bias, cfg.timestep_bias_multiplier, cfg.timestep_bias_portion
    )  # bad options fail before anything loads
    out = Path(cfg.out)
    ckpt = out / CHECKPOINT
    if ckpt.exists() and not cfg.resume:
        raise UserError(
            f"{out} already holds a run; pass --resume to continue it or pick a new --out"
        )
    # a missing, broken or foreign checkpoint is refused before any model loads
    resume_state = read_checkpoint(ckpt, cfg) if cfg.resume else None
    if acc_main_process():
        make_output_dir(out, KIND)
    from accelerate import Accelerator
    from dvclive import Live

    from trainer.buckets import BatchOrder
    from trainer.cache_batches import CacheBatches
    from trainer.data import Augment, batches, read_weights
    from trainer.model import freeze_for_adapters, load_components, save_adapters
    from trainer.quiet import quiet_cast

    # -- setup: accelerator, models, what trains ------------------------------------------------
    acc = Accelerator(mixed_precision=cfg.mixed_precision)
    device, gated = acc.device, cfg.mode == ADAPTERS
    torch.manual_seed(cfg.seed)
    comps = load_components(cfg.model, gated=gated, seed=cfg.seed)
    t_weights = timestep_weights(
        comps.scheduler.config.num_train_timesteps,
        cfg.timestep_bias,
        cfg.timestep_bias_multiplier,
        cfg.timestep_bias_portion,
    )
    source = make_source(cfg, comps, Augment(cfg.caption_drop, cfg.grounding_drop))
    cached = isinstance(source, CacheBatches)
    # frozen encoders run in the mixed-precision dtype, as diffusers' training scripts do;
    # the VAE is needed even with a cache: it decodes for the detail monitor
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision)
    with quiet_cast():  # SDXL's VAE config asks for fp32 modules; diffusers warns per cast
        for m in (comps.vae, *([] if cached else comps.text_encoders)):
            if m is not None:
                m.to(device, dtype=weight_dtype)
    unet = comps.unet.to(device)
    if gated:
        params = freeze_for_adapters(unet)
        warm_start_gates(unet, cfg.attn_gate_init)  # a resumed run's checkpoint overwrites it
    else:
        params = list(unet.requires_grad_(True).parameters())
    unet.train()
    n_trainable, n_total = sum(p.numel() for p in params), sum(p.numel() for p in unet.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    unet, optimizer = acc.prepare(unet, optimizer)
    raw_unet = acc.unwrap_model(unet)

    # -- data: a reproducible stream of batches, sharded across processes ------------------------
    image_ids = source.plan["image_id"] if cached else source.layouts.image_ids
    weights = read_weights(cfg.weights, image_ids) if cfg.weights else None
    order = BatchOrder(source.bucket_of, cfg.batch_size, seed=cfg.seed, weights=weights)
    start = 0
    if resume_state is not None:
        start = restore_checkpoint(resume_state, ckpt, raw_unet, optimizer, acc.scaler)
        del resume_state  # base mode: a whole UNet and its optimiser state, not kept twice
    per_step = cfg.grad_accum * acc.num_processes
    stream = batches(
        source,
        order,
        seed=cfg.seed,
        start=start * per_step + acc.process_index,
        stride=acc.num_processes,
        workers=cfg.workers,
    )
    watch = acc.is_main_process and cfg.monitor_every > 0 and cfg.monitor_samples > 0
    monitor = monitor_samples(cfg, comps, device, gated) if watch else None
    if acc.is_main_process and start > 0:
        trim_metrics(out / "dvclive", start)
    live = (
        Live(dir=str(out / "dvclive"), resume=start > 0, save_dvc_exp=False, dvcyaml=None)
        if acc.is_main_process
        else None
    )
    if live is not None and start == 0:
        live.log_params(
            asdict(cfg) | {"trainable_parameters": n_trainable, "unet_parameters": n_total}
        )

    # -- the loop ------------------------------------------------------------------------------
    t0, loss_sum, last_loss = time.perf_counter(), 0.0, None
    t_data = t_encode = 0.0  # where a step's time goes besides the UNet
    bar = progress(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        desc=f"train {cfg.mode}",
        disable=None if acc.is_main_process else True,
    )
    for step in bar:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for micro in range(cfg.grad_accum):
            t_in = time.perf_counter()
            batch = next(stream)
            t_enc = time.perf_counter()
            latents, cap, gligen = encode_batch(comps, batch, device, gated)
            t_data += t_enc - t_in
            t_encode += time.perf_counter() - t_enc
            g = batch_generator(cfg.seed, batch["index"], device)
            sync = contextlib.nullcontext() if micro == cfg.grad_accum - 1 else acc.no_sync(unet)
            with sync:
                with acc.autocast():
                    loss = diffusion_loss(unet, comps.scheduler, latents, cap, gligen, g, t_weights)
                acc.backward(loss / cfg.grad_accum)
            loss_sum += loss.item() / cfg.grad_accum
        if cfg.max_grad_norm > 0:
            acc.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        done = step + 1
        if acc.num_processes > 1:  # log the loss of the whole global batch, not one shard's
            loss_sum = acc.reduce(torch.tensor(loss_sum, device=device), "mean").item()
        if live is not None:
            live.step = done
            live.log_metric("train/loss", loss_sum)
            live.log_metric("train/lr", lr)
            bar.set_postfix(loss=f"{loss_sum:.4f}", lr=f"{lr:.2e}")
            if monitor is not None and (done % cfg.monitor_every == 0 or done == cfg.steps):
                unet.eval()
                with acc.autocast():
                    for k, v in monitor(raw_unet).items():
                        live.log_metric(k, v)
                unet.train()
            # next_step() rereads every metrics file (O(steps) each call), so sync sparsely;
            # log_metric has already appended this step's rows to the TSVs
            if done % (cfg.monitor_every or D.MONITOR_EVERY) == 0 or done == cfg.steps:
                live.sync()
        last_loss, loss_sum = loss_sum, 0.0
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            if acc.is_main_process:
                save_checkpoint(ckpt, raw_unet, optimizer, acc.scaler, done, cfg)
            acc.wait_for_everyone()
    elapsed = time.perf_counter() - t0

    # -- outputs -------------------------------------------------------------------------------
    summary = {
        "mode": cfg.mode,
        "steps": cfg.steps,
        "resumed_from": start,
        "trainable_parameters": n_trainable,
        "unet_parameters": n_total,
        "steps_per_s": (cfg.steps - start) / elapsed if elapsed > 0 else None,
        "final_loss": last_loss,
        "data_s": t_data,
        "encode_s": t_encode,
        "elapsed_s": elapsed,
        **peak_memory(device),
    }
    if acc.is_main_process:
        if gated:
            summary["adapters"] = str(
                save_adapters(raw_unet, out / "adapters.safetensors", {"training": asdict(cfg)})
            )
        else:
            summary["model"] = str(save_base_model(raw_unet, comps, out))
        atomic_write_text(out / "train.json", json.dumps(summary, indent=2, default=str) + "\n")
        if live is not None:
            live.end()
    summary["unet"] = raw_unet
    return summary
