"""``pipeline.core.heap``: with the audit's thresholds, freed temporaries stay resident
inside glibc's heap, and ``release_free_heap`` hands them back (a fresh process, so that
nothing else in it moves its memory)."""

import platform
import subprocess
import sys

import pytest

CHILD = """
import numpy as np
from pipeline.core.heap import release_free_heap, tune_heap

def anon_mib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024

tune_heap()
# 2 MiB arrays (under the 32 MiB mmap threshold: from the heap), every other one freed:
# holes inside the heap, which its top-only trimming cannot return
arrays = [np.ones(1 << 18) for _ in range(64)]
del arrays[::2]
held = anon_mib()
release_free_heap()
print(held, anon_mib())
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's heap and /proc: Linux with glibc",
)
def test_freed_heap_memory_is_returned_between_parts():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    held, after = map(float, out.stdout.split())
    # 32 arrays of 2 MiB freed: without the trim they stay resident (held), with it at
    # least half of those 64 MiB leave (the rest of RSS is the interpreter and NumPy)
    assert held - after >= 32, (held, after)
