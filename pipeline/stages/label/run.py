"""The label stage: a folder of unlabelled images → a dataset directory of detector boxes.

Work is cut into shards of a fixed number of images in sorted file order. Each finished
shard is written atomically to ``<out>.work/``; a rerun of the same command skips every
shard already there, so a run killed at any moment (SIGKILL included) resumes where it
stopped and ends with exactly the records of an uninterrupted run. A run whose inputs
or settings changed starts a fresh work directory instead of mixing the two.

Shards run in this process (``workers=1``), on N local dask worker processes, or on an
existing dask cluster (``scheduler``); workers build the detector once and keep it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from detectors.base import DetectorOptions, model_name, origin
from detectors.phrases import check_known, load_phrase_map
from detectors.ultralytics_backend import fingerprint_weights, resolve_weights
from pipeline.core import defaults as D
from pipeline.core.atomic import atomic_path
from pipeline.core.dataset import input_entry, write_dataset
from pipeline.core.device import resolve_device
from pipeline.core.errors import UserError
from pipeline.core.hashing import fingerprint
from pipeline.core.images import list_images
from pipeline.core.outputs import claim_output
from pipeline.core.progress import progress
from pipeline.core.resumable import open_job_dir
from pipeline.stages.label.captions import read_sidecar
from pipeline.stages.label.records import STAGE, build_records
from pipeline.stages.label.shard import (
    SHARD_SCHEMA,
    LabelJob,
    class_names,
    detector_for,
    label_shard,
    shard_cpu_seconds,
    shard_path,
)

# Worker settings for a local cluster, both measured to cost CPU the detector needs:
# dask's statistical profiler samples every thread's stack every 10 ms, and its
# MALLOC_TRIM_THRESHOLD_ turns off glibc's adaptive mmap threshold, so every decoded
# image and input tensor (megabytes each) is mmapped and page-faulted afresh (+15% CPU
# per image). The numeric thread caps of dask's default are kept.
WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.nanny.pre-spawn-environ": {
        "OMP_NUM_THREADS": 1,
        "MKL_NUM_THREADS": 1,
        "OPENBLAS_NUM_THREADS": 1,
    },
}
GENERIC_DIR_NAMES = {"images", "imgs", "img", "jpegimages"}
TIMING_LOG = "GROUNDSET_TIMING_LOG"  # env: a file each run appends its timings to


def default_source(root: Path) -> str:
    """``data/unlabelled/images`` → ``unlabelled``: a folder called "images" says nothing."""
    root = root.resolve()
    if root.name.lower() in GENERIC_DIR_NAMES and root.parent.name:
        return root.parent.name
    return root.name or "images"


def work_dir(out: Path) -> Path:
    return out.with_name(out.name + ".work")


def write_shard(work: Path, index: int, table: pa.Table) -> None:
    with atomic_path(shard_path(work, index)) as tmp:
        pq.write_table(table, tmp)


def _check_options(o: DetectorOptions, batch: int, shard_size: int, workers: int) -> None:
    problems = []
    if not 0.0 <= o.conf <= 1.0:
        problems.append(f"--conf {o.conf} must be in [0, 1]")
    if not 0.0 < o.iou <= 1.0:
        problems.append(f"--iou {o.iou} must be in (0, 1]")
    if o.max_det < 1 or o.imgsz < 32 or batch < 1 or shard_size < 1 or workers < 1:
        problems.append(
            "--max-det, --batch, --shard-size and --workers must be >= 1, --imgsz >= 32"
        )
    if problems:
        raise UserError("; ".join(problems))


def label(
    images: str | Path,
    out: str | Path,
    weights: str | Path,
    *,
    captions: str | Path | None = None,
    source: str | None = None,
    conf: float = D.CONF,
    iou: float = D.IOU,
    max_det: int = D.MAX_DET,
    imgsz: int = D.IMGSZ,
    classes=(),
    phrase_map: str | Path | None = None,
    vocabulary=(),
    batch: int = D.LABEL_BATCH,
    device: str = D.DEVICE,
    workers: int = D.LABEL_WORKERS,
    scheduler: str | None = None,
    shard_size: int = D.LABEL_SHARD_SIZE,
    max_pixels: int = D.MAX_IMAGE_PIXELS,
    threads: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Label every image under ``images`` and write a dataset directory to ``out``."""
    root, out = Path(images), Path(out)
    if not root.is_dir():
        raise UserError(f"--images {root} is not a directory")
    with claim_output(
        out, kind=STAGE, inputs=[root, weights, captions, phrase_map], overwrite=overwrite
    ):
        options = DetectorOptions(conf, iou, max_det, imgsz, tuple(classes), tuple(vocabulary))
        device = resolve_device(device)
        _check_options(options, batch, shard_size, workers)
        weights_path, kind = resolve_weights(weights)
        weights_sha = fingerprint_weights(weights_path, kind)
        mapping = load_phrase_map(phrase_map)
        sidecar = read_sidecar(captions) if captions else {}
        listing = list_images(root)
        source = source or default_source(root)
        job = LabelJob(
            weights=str(weights_path),
            options=options,
            root=str(root.resolve()),
            batch=batch,
            device=device,
            max_pixels=max_pixels,
            threads=threads,
        )
        spec = {
            "weights_sha256": weights_sha,
            "options": options.as_dict(),
            "batch": batch,
            "shard_size": shard_size,
            "device": device,
            "max_pixels": max_pixels,
            "root": job.root,
            "files": fingerprint(listing.root, by="mtime", files=listing.files),
        }
        work = open_job_dir(work_dir(out), spec)
        shards = [
            listing.files[i : i + shard_size] for i in range(0, len(listing.files), shard_size)
        ]
        try:
            timing = {}
            names = run_shards(
                job,
                shards,
                work,
                workers=workers,
                scheduler=scheduler,
                timing=timing,
                check=lambda names: check_known(mapping, names, phrase_map),
            )
        except BaseException:
            if not any(work.glob("shard-*")):  # nothing worth resuming: leave no clutter
                shutil.rmtree(work, ignore_errors=True)
            raise

        raw = read_shards(work, len(shards))
        if raw.column("file").to_pylist() != listing.files:  # a bug, never the user's data
            raise AssertionError("shards do not cover the image listing exactly once")
        org = origin(model_name(weights_path), weights_sha)
        records, rejects, boxes_in, n_composed = build_records(
            raw, listing, source=source, origin=org, mapping=mapping, sidecar=sidecar
        )
        params = {
            **options.as_dict(),
            "batch": batch,
            "shard_size": shard_size,
            "device": device,
            "max_pixels": max_pixels,
            "source": source,
            "captions": str(captions) if captions else None,
            "phrase_map": str(phrase_map) if phrase_map else None,
        }
        inputs = [  # listed by (path, size): the mtimes of the resume key differ per checkout
            {
                "path": str(root),
                "sha256": fingerprint(listing.root, by="size", files=listing.files),
            },
            {"path": str(weights), "sha256": weights_sha},
        ]
        inputs += [input_entry(p) for p in (captions, phrase_map) if p]
        extra = {
            "detector": {
                "name": model_name(weights_path),
                "weights": str(weights),
                "sha256": weights_sha,
                "origin": org,
                "class_names": names,
            },
            "files_ignored": listing.ignored,
            "captions": {
                "from_sidecar": records.num_rows - n_composed,
                "composed": n_composed,
                "sidecar_files_not_found": len(set(sidecar) - set(listing.files)),
            },
        }
        manifest = write_dataset(
            out,
            records,
            rejects,
            stage=STAGE,
            inputs=inputs,
            params=params,
            images_in=len(listing.files) + len(listing.rejects),
            boxes_in=boxes_in,
            sources={source: {"images_root": job.root}},
            extra=extra,
        )
        shutil.rmtree(work, ignore_errors=True)
        timing = {k: round(v, 3) for k, v in timing.items()}  # this run only (resumes differ)
        log_timing(out, timing)
        return {**manifest, "timing": timing}


def log_timing(out: Path, timing: dict) -> None:
    """Timings are kept out of the dataset directory (the same inputs must give the same
    bytes); with ``GROUNDSET_TIMING_LOG=FILE`` each run appends them there as a JSON line."""
    log = os.environ.get(TIMING_LOG)
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"stage": STAGE, "out": str(out), **timing}) + "\n")


def run_shards(
    job: LabelJob,
    shards: list,
    work: Path,
    *,
    workers: int,
    scheduler,
    timing: dict | None = None,
    check=None,
) -> list:
    """Run every shard not yet on disk; returns the detector's class names.

    ``check(names)`` runs as soon as the model's class names are known, before any
    shard, so a typo in a phrase map fails in seconds rather than after the whole run.

    ``timing`` receives ``startup_s`` (model load, or cluster start and a model load on
    every worker) and ``detect_s`` (the shards themselves), so throughput can be judged
    apart from fixed start-up costs.
    """
    timing = {} if timing is None else timing
    t0 = time.perf_counter()
    pending = [i for i in range(len(shards)) if not shard_path(work, i).is_file()]
    total = sum(len(s) for s in shards)
    done = total - sum(len(shards[i]) for i in pending)
    if len(pending) < len(shards):
        print(
            f"label: resuming, {len(shards) - len(pending)} of {len(shards)} shards already "
            f"done in {work}",
            file=sys.stderr,
        )
    in_process = scheduler is None and workers <= 1
    if not in_process:
        return _run_dask(
            job, shards, pending, work, workers, scheduler, (total, done), timing, check
        )
    names = list(detector_for(job).names)  # loaded before the bar's clock starts
    if check is not None:
        check(names)
    t1, cpu = time.perf_counter(), 0.0
    with progress(total=total, initial=done, unit="img", desc="label", smoothing=0.1) as bar:
        for i in pending:
            table = label_shard(job, shards[i], on_batch=bar.update)
            cpu += shard_cpu_seconds(table)
            write_shard(work, i, table)
    timing.update(
        startup_s=t1 - t0, detect_s=time.perf_counter() - t1, cpu_s=cpu, images=total - done
    )
    return names


def _run_dask(job, shards, pending, work, workers, scheduler, counts, timing, check) -> list:
    import dask
    from dask.distributed import Client, LocalCluster, as_completed

    t0 = time.perf_counter()

    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as e:
            raise UserError(f"cannot reach dask scheduler {scheduler}: {e}") from None
    else:
        # One model per process; its intra-op threads share the machine's cores evenly.
        if job.threads is None:
            job = dataclasses.replace(job, threads=max(1, (os.cpu_count() or 1) // workers))
        with dask.config.set(WORKER_CONFIG), warnings.catch_warnings():
            # the scheduler's HTTP endpoint moves to a free port when 8787 is taken
            # (another cluster); that is not worth a warning on the user's terminal
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        client = Client(cluster)
    try:
        # Every worker builds its model now (and reports the class names), so model
        # loading is start-up cost, not a straggling first shard.
        names = next(iter(client.run(class_names, job).values()))
        if check is not None:
            check(names)
        t1 = time.perf_counter()
        futures = client.map(
            label_shard, [job] * len(pending), [shards[i] for i in pending], pure=False
        )
        index = {f.key: i for f, i in zip(futures, pending)}
        cpu = 0.0
        with progress(
            total=counts[0], initial=counts[1], unit="img", desc="label", smoothing=0.1
        ) as bar:
            for fut, table in as_completed(futures, with_results=True):
                write_shard(work, index[fut.key], table)
                cpu += shard_cpu_seconds(table)
                bar.update(table.num_rows)
        timing.update(
            startup_s=t1 - t0,
            detect_s=time.perf_counter() - t1,
            cpu_s=cpu,
            images=counts[0] - counts[1],
        )
        return names
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def read_shards(work: Path, n: int) -> pa.Table:
    tables = [pq.read_table(shard_path(work, i), schema=SHARD_SCHEMA) for i in range(n)]
    return pa.concat_tables(tables) if tables else SHARD_SCHEMA.empty_table()
