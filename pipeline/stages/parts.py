"""Work on a dataset directory one records part at a time, here or on dask workers.

The stages that read a whole dataset (``audit``, ``curate``, ``export``) do it part by
part, so their memory is set by the part size (``ROWS_PER_PART`` rows), not by the
dataset size. ``map_parts`` runs one function per part and yields the results in part
order: in this process (the default), on a local dask scheduler (``threads``,
``processes``, ``synchronous``), or on an existing cluster (``tcp://host:8786``), the
way ``label`` reaches one. Local schedulers run a window of parts at a time, so results
never pile up faster than the caller consumes them; a cluster keeps finished results on
its workers until the caller asks for them, in order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.core.dataset import read_manifest, record_parts
from pipeline.core.errors import UserError

LOCAL = ("threads", "processes", "synchronous")


def check_scheduler(scheduler: str | None) -> None:
    """A bad ``--scheduler`` is one line before any work."""
    if scheduler is not None and "://" not in scheduler and scheduler not in LOCAL:
        raise UserError(
            f"--scheduler must be threads, processes, synchronous or an address "
            f"like tcp://host:8786, got {scheduler!r}"
        )


def parts_of(path: str | Path, manifest: dict | None = None) -> list[tuple[Path, int | None]]:
    """``(part file, rows the manifest lists for it)`` for every records part, in order."""
    manifest = read_manifest(path) if manifest is None else manifest
    rows = {p["file"]: p["rows"] for p in manifest.get("parts") or []}
    return [(p, rows.get(p.name)) for p in record_parts(path, manifest)]


def map_parts(fn: Callable, args: list[tuple], scheduler: str | None = None) -> Iterator:
    """``fn(*a)`` for each ``a`` in ``args``, yielded in order (see the module doc)."""
    check_scheduler(scheduler)
    if scheduler is None:
        for a in args:
            yield fn(*a)
    elif "://" in scheduler:
        yield from _cluster(fn, args, scheduler)
    else:
        import dask

        window = 2 * (os.cpu_count() or 1)
        for start in range(0, len(args), window):
            tasks = [dask.delayed(fn)(*a) for a in args[start : start + window]]
            yield from dask.compute(*tasks, scheduler=scheduler)


def _cluster(fn: Callable, args: list[tuple], scheduler: str) -> Iterator:
    from dask.distributed import Client

    try:
        client = Client(scheduler, timeout="30s")
    except (OSError, TimeoutError) as e:
        raise UserError(f"cannot reach dask scheduler {scheduler}: {e}") from None
    try:
        futures = [client.submit(fn, *a, pure=False) for a in args]
        for fut in futures:
            yield fut.result()
            fut.release()
    finally:
        client.close()
