"""Atomic outputs: a reader sees the old output or the new one, never half of one.

Every stage output (a dataset directory, a model folder, a report, a checkpoint) is
built under a temporary name beside its final path and renamed into place only when
it is complete, so a stage killed at any moment leaves nothing a later stage would
trust. Beside, so the rename stays on one filesystem. Temporary names start with a
dot and carry ``.tmp-`` so that they are recognisable as leftovers of a killed run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.core.outputs import claim_output, write_marker


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, *, kind: str | None = None) -> Iterator[Path]:
    """Yield an empty folder to build ``out`` in; it replaces ``out`` if the block succeeds.

    On an exception (or a kill) the folder is removed and ``out`` is left as it was. A
    ``kind`` marks the folder as a groundset output of that kind, and ``out`` is claimed
    first (``pipeline.core.outputs``) unless its stage already holds it; pieces of an
    output that is claimed as a whole (shards, a run's model folder) pass no kind.
    """
    out = Path(out)
    claim = contextlib.nullcontext() if kind is None else claim_output(out, kind=kind)
    with claim:
        try:
            tmp = _staging_dir(out)
        except OSError as e:  # an unwritable or impossible --out is the user's to fix
            raise UserError(f"cannot write {out}: {e.strerror or e}") from None
        try:
            yield tmp
            if kind is not None:
                write_marker(tmp, kind)
            _replace_dir(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(near: str | Path) -> Iterator[Path]:
    """A private work folder beside ``near`` (same filesystem, so its files can be moved
    into an output cheaply), always removed afterwards."""
    near = Path(near)
    near.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{near.name}.tmp-", dir=near.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file name beside ``path``; it is renamed onto ``path`` if the
    block succeeds; it keeps ``path``'s suffix. For writers that want a path (``np.save``, ``pq.write_table``,
    ``torch.save``, safetensors) rather than a file object."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _staging_dir(out: Path) -> Path:
    """A fresh folder beside ``out``, with the umask's permissions: ``mkdtemp`` makes it
    private (0700), and the rename would keep that."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst``, replacing any previous output in (nearly) one rename."""
    if dst.exists() or dst.is_symlink():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def _umask() -> int:
    """The process umask; temp files are created 0600/0700 and must not stay that way."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
