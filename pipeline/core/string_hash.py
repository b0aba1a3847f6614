"""64-bit hashes of Arrow strings, in NumPy: a cheap first test for repeated ids.

Checking that a dataset's ids are unique with Arrow's ``unique`` builds a hash table
holding a copy of every id: 150 ms and 67 MiB more peak memory for 1,000,000 short ids,
and it grows with the dataset (20M ids: over a GB). Sorting one 64-bit hash per id
finds the same repeats in 8 bytes an id. Equal hashes only nominate: the caller
confirms with the strings themselves, so a collision costs time, never a wrong answer.

Each id is read as little-endian 8-byte words (gathered one word at a time from eight
copies of the string data shifted by 0-7 bytes: no per-byte index arrays), the bytes
past its end masked to zero, and the words folded with a multiply-xorshift mix; the
length goes in last, so ids that differ only by trailing NUL bytes still differ.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.core import arrow_kernels as kernels

_PRIME = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplication by it is a bijection
_MIX = np.uint64(0xBF58476D1CE4E5B9)
ROWS_PER_BLOCK = 65_536  # bounds the temporaries: a few (rows,) uint64 arrays


def hashable(column) -> bool:
    """Whether ``string_hashes`` takes this Arrow array or chunked array."""
    return pa.types.is_string(column.type) or pa.types.is_large_string(column.type)


def string_hashes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One uint64 per string, in order (nulls hash as empty strings)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out = np.empty(len(column), np.uint64)
    at = 0
    for chunk in chunks:
        for start in range(0, len(chunk), ROWS_PER_BLOCK):
            block = chunk.slice(start, ROWS_PER_BLOCK)
            out[at : at + len(block)] = _hash_block(block)
            at += len(block)
    return out


def _hash_block(arr: pa.Array) -> np.ndarray:
    n = len(arr)
    if n == 0:
        return np.empty(0, np.uint64)
    offsets, data = kernels.string_bytes(arr, pad=16)
    lengths = np.diff(offsets)
    # the bytes as eight uint64 arrays: row r holds the words starting at bytes r, r + 8,
    # r + 16, ...; the padding keeps every word read below inside
    size = (data.size - 8) // 8
    shifted = np.stack([np.frombuffer(data, np.uint64, size, r) for r in range(8)])
    start = offsets[:-1]
    at = (start % 8) * size + start // 8  # each string's first word in ``shifted``
    flat = shifted.ravel()
    h = np.zeros(n, np.uint64)
    for w in range((int(lengths.max()) + 7) // 8):
        left = np.clip(lengths - 8 * w, 0, 8).astype(np.uint64)
        word = np.take(flat, at + w, mode="clip")  # past a string's end: masked off below
        # keep the string's own bytes, ``left`` of them, low bytes first (little-endian);
        # the shift stays under 64 bits: 8 bytes left keep the whole word
        low = (np.uint64(1) << (np.minimum(left, 7) * np.uint64(8))) - np.uint64(1)
        h ^= word & np.where(left >= 8, ~np.uint64(0), low)
        h *= _PRIME
        h ^= h >> np.uint64(31)
    h ^= lengths.astype(np.uint64)
    h *= _MIX
    h ^= h >> np.uint64(29)
    return h


def repeats_possible(column: pa.Array | pa.ChunkedArray) -> bool:
    """False when no two strings share a hash, so none repeats; True means maybe."""
    h = np.sort(string_hashes(column))
    return bool((h[1:] == h[:-1]).any())
