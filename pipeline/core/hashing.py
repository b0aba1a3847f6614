"""Fingerprints: what identifies an input, a model or a job, written once.

Manifests record the sha256 of their inputs, labels carry the detector's fingerprint in
their ``origin``, and resumable work is keyed by a hash of its request. One module, so
that the same file always gets the same fingerprint whichever stage asks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np

CHUNK = 1 << 20
By = Literal["contents", "size", "mtime"]


def sha256_bytes(data: bytes) -> str:
    """Hash an input already in memory (hashlib drops the GIL, so this can overlap a parse)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Plain sha256 of a file's bytes, so it matches ``sha256sum``."""
    return _update_from_file(hashlib.sha256(), Path(path)).hexdigest()


def sha256_json(value) -> str:
    """sha256 of a JSON-able value, independent of dict order."""
    return sha256_bytes(json.dumps(value, sort_keys=True, default=str).encode())


def fingerprint(
    path: str | Path, *, by: By = "contents", files: Iterable[str] | None = None
) -> str:
    """sha256 of a file, or of a folder's files in sorted order of their relative names.

    ``by`` says what of each file counts: its bytes (``contents``; a lone file then gets
    its plain sha256), its size (``size``: an image folder is listed without reading
    pixels, which would dominate an ingest), or its size and mtime (``mtime``: a cheap
    key for resumable work, which a rewritten file must invalidate). Names are relative,
    so a folder copied elsewhere keeps its fingerprint. ``files`` restricts a folder to a
    listing already made.
    """
    root = Path(path)
    if root.is_file() and by == "contents" and files is None:
        return sha256_file(root)
    if files is None:
        names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    else:
        names = sorted(files)
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\x00")
        if by == "contents":
            _update_from_file(h, root / name)
        else:
            st = (root / name).stat()
            h.update(f"{st.st_size}\x00{st.st_mtime_ns if by == 'mtime' else ''}".encode())
        h.update(b"\x00")
    return h.hexdigest()


def _update_from_file(h, path: Path):
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h


def string_digests(values) -> np.ndarray:
    """``(n, 2)`` uint64: a 128-bit BLAKE2b digest of each string, a compact stand-in
    for the strings when only equality matters (two different strings share one with
    probability 2^-128: about 1e-24 among 20 million)."""
    raw = b"".join(hashlib.blake2b(v.encode("utf-8"), digest_size=16).digest() for v in values)
    return np.frombuffer(raw, dtype="<u8").reshape(-1, 2)


def first_rows(d: np.ndarray) -> np.ndarray:
    """For each row, the first row with the same digest (itself when it is the first)."""
    n = d.shape[0]
    order = np.lexsort((d[:, 1], d[:, 0]))  # stable: equal digests stay in row order
    sd = d[order]
    starts = np.ones(n, bool)
    starts[1:] = (sd[1:] != sd[:-1]).any(axis=1)
    group_first = order[np.flatnonzero(starts)]
    first = np.empty(n, np.int64)
    first[order] = np.repeat(group_first, np.diff(np.append(np.flatnonzero(starts), n)))
    return first
