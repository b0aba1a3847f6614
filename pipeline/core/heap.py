"""glibc's heap: keep the layout statistics' temporaries for reuse, and hand the memory
they leave free back to the system between records parts.

The statistics' temporaries (1-4 MB each, a few dozen per block) come from the heap and
are reused between blocks, instead of mmap/munmap per block faulting every page in again
(78,000 minor faults, 0.15 s of system time, for one 250,000-image audit's statistics;
about 33,000 and 0.05 s with these thresholds). The trim threshold bounds the freed
memory a heap keeps at its top: 64 MB let the 1,000,000-image audit's peak grow to 1.34x
the 250,000-image one, 16 MB gave 1.21x (481 vs 397 MiB) at the same CPU time.

Freed memory *inside* the heaps stays resident all the same (50-80 MiB between parts of
the 1,000,000-image audit, by ``mallinfo2``), and each later part's read and statistics
came on top of it: ``release_free_heap`` before each part's read returns it. Whole audits,
medians of 9, interleaved, two sets: peak RSS at 1,000,000 images 342 -> 325 and 339 ->
329 MiB (250,000: 278 -> 277 and 275 -> 278; 1.23x -> 1.17x and 1.18x). The cost: the
next part's temporaries fault in again: for 250,000 images 79,400 -> 86,100 minor
faults, and 0.85 -> 0.87 s (11 runs) and 0.98 -> 0.95 s (21 runs), inside this shared
machine's noise; 2.58 -> 2.57 s at 1,000,000 images (7 runs).

Everything here does nothing off glibc (the numbers are glibc's), and never changes a
value: only where freed memory waits.
"""

from __future__ import annotations

from functools import cache

HEAP_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value
HEAP_TRIM_THRESHOLD = 16 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # mallopt's parameters


@cache
def _glibc():
    """The C library when it is glibc, else None."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # TypeError: Windows has no "this process" library
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None


@cache
def tune_heap() -> None:
    """Once per process: keep freed temporaries for reuse (see the module's docstring).

    Setting either threshold turns off glibc's own adaptive threshold, so both are set.
    A heap keeps up to ``HEAP_TRIM_THRESHOLD`` of freed memory at its top instead of
    returning it to the system. One heap (arena) for all threads: with one per thread,
    the statistics' threads each faulted in their own copy of the temporaries. Called
    before the audit starts its threads; whole audits of 250,000 images, 11 runs each,
    interleaved: 78,600 -> 69,000 minor faults, 0.35 -> 0.28 s system time, 1.01 ->
    0.97 s, peak 252 -> 238 MiB (1,000,000 images: 294 -> 282 MiB, medians of 9). The
    threads allocate a few large arrays per block, so they rarely wait on its lock."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD)
        libc.mallopt(_M_ARENA_MAX, 1)


def release_free_heap() -> None:
    """Return every heap's free pages to the system (``malloc_trim(0)``: all arenas,
    inside the heaps too, not only at their tops): 7 ms for 240 MiB of freed arrays.
    The next part's temporaries fault their pages in again."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
