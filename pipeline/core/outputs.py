"""Where a stage may write: never over what groundset did not make, never over an input.

Stages replace their whole output, so a mistyped ``--out`` used to delete whatever was
there: a folder of notes, or the images the command was reading. A stage therefore
claims its output before any work:

- an ``--out`` that equals, contains or lies inside one of the command's inputs
  (symlinks resolved) is refused, even with ``--overwrite``;
- an existing output folder is replaced only when it is empty or groundset made it for
  the same kind of output (a marker file says which), unless the user passes
  ``--overwrite``; a file output replaces a file, never a folder;
- a lock beside the output refuses a second run on the same ``--out`` while the first
  is alive (``flock``: a killed run's lock is free again), and the staging leftovers of
  killed runs beside the output are removed once the lock is held.

``atomic_output_dir`` claims its target by itself when its stage has not, so every
writer gets these rules by construction; stages claim first to refuse before working.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.core.errors import UserError

MARKER = ".groundset-output"
_CLAIMED: set[Path] = set()  # outputs this process holds the lock of


@contextlib.contextmanager
def claim_output(
    out: str | Path,
    *,
    kind: str,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
    is_file: bool = False,
) -> Iterator[Path]:
    """Check ``out`` against the rules above, lock it for the block, and clear leftovers."""
    out = Path(out)
    key = _key(out)
    if key in _CLAIMED:  # a stage already holds it (and checked it)
        yield out
        return
    check_inputs(out, inputs)
    check_replaceable(out, kind=kind, overwrite=overwrite, is_file=is_file)
    with _locked(out):
        _CLAIMED.add(key)
        try:
            remove_leftovers(out)
            yield out
        finally:
            _CLAIMED.discard(key)


def check_inputs(out: Path, inputs: Iterable[str | Path | None]) -> None:
    target = _key(out)
    for given in inputs:
        if given is None or str(given) == "":
            continue
        src = _key(Path(given))
        if target == src or src in target.parents or target in src.parents:
            raise UserError(
                f"--out {out} overlaps the input {given}; an output must lie outside every "
                "input (nothing was written)"
            )


def check_replaceable(out: Path, *, kind: str, overwrite: bool, is_file: bool) -> None:
    if not (out.exists() or out.is_symlink()):
        return
    if is_file:
        if out.is_dir():
            raise UserError(f"--out {out} is a folder; give a file name for the {kind} output")
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is a file; the {kind} output is a folder")
    if overwrite or not any(out.iterdir()) or kind_of(out) == kind:
        return
    made = kind_of(out)
    what = f"a groundset {made} output" if made else "not a groundset output"
    raise UserError(
        f"--out {out} exists and is {what}, so it is not replaced by this {kind} run; "
        "choose a new path, or pass --overwrite to replace it"
    )


def kind_of(folder: Path) -> str | None:
    """What groundset made ``folder`` as: its marker, else a dataset manifest's stage."""
    for name, field in ((MARKER, "kind"), ("manifest.json", "stage")):
        try:
            value = json.loads((folder / name).read_text()).get(field)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str):
            return value
    return None


def write_marker(folder: Path, kind: str) -> None:
    (folder / MARKER).write_text(json.dumps({"kind": kind}) + "\n")


def make_output_dir(out: str | Path, kind: str) -> Path:
    """Create a claimed output that its stage builds in place (a training run, a cache,
    an evaluation), marked from the start so that a rerun after a kill may continue it.

    A folder of another kind (allowed by ``--overwrite``) is emptied first: overwriting
    means replacing, never mixing two outputs.
    """
    out = Path(out)
    if out.is_dir() and kind_of(out) != kind:
        for p in out.iterdir():
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if kind_of(out) != kind:
        write_marker(out, kind)
    return out


@contextlib.contextmanager
def no_empty_output_on_failure(out: str | Path) -> Iterator[None]:
    """An in-place output (``make_output_dir``) that a failed run created but never wrote
    into is removed, so a run that failed early leaves no folder behind."""
    out = Path(out)
    fresh = not (out.exists() or out.is_symlink())
    try:
        yield
    except BaseException:
        if fresh and out.is_dir() and [p.name for p in out.iterdir()] == [MARKER]:
            shutil.rmtree(out, ignore_errors=True)
        raise


def remove_leftovers(out: Path) -> None:
    """Staging folders and temp files that killed runs left beside ``out``."""
    if not out.parent.is_dir():
        return
    for prefix in (f".{out.name}.tmp-", f".{out.name}.old-"):
        for p in out.parent.glob(f"{_glob_escape(prefix)}*"):
            remove_path(p)


def remove_path(p: Path) -> None:
    """A leftover file, link or folder, gone whatever it is (a link is never followed)."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    lock = out.with_name(f".{out.name}.lock")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise UserError(
                f"another groundset run (pid {holder}) is writing {out}; wait for it to "
                "finish or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _key(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)
