"""Process-wide pyarrow settings: its memory pool, and no pandas where none is needed.

``use_jemalloc`` gives all of Arrow's memory to its jemalloc pool (see there).

pyarrow imports pandas (0.35-0.5 s of CPU on this machine, a third of a whole
``groundset audit`` of 250,000 images) the first time it converts NumPy or Python
values, only to check whether they are pandas objects. ``skip_pandas_probe`` lets that
one probe fail, so pyarrow behaves as it does where pandas is not installed; an
explicit pandas call (``Table.to_pandas``, ``Table.from_pandas``) still imports pandas
and works as usual. What changes is ``pa.array(series)`` and ``pa.scalar(pd.NA)``:
pandas values are then converted as plain Python sequences (NaN stays NaN, ``pd.NA``
is refused), so only a command whose code converts no pandas data may call this, once,
at start-up (``groundset audit`` does).
"""

from __future__ import annotations

import os
import sys

POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"
JEMALLOC_MACHINES = ("x86_64",)


class _NoPandas:
    def find_spec(self, name, path=None, target=None):
        if name == "pandas":
            raise ImportError("pandas is not needed by this command")


def skip_pandas_probe() -> None:
    """Make pyarrow's first conversions (NumPy and Python values) run without pandas."""
    if "pandas" in sys.modules:  # already paid for, or in use: change nothing
        return
    import numpy as np
    import pyarrow as pa

    hide = _NoPandas()
    sys.meta_path.insert(0, hide)
    try:
        # the two probes: pyarrow.lib's (NumPy values) and the C++ converter's (Python)
        pa.array(np.zeros(1))
        pa.array([None, 0.0])
    finally:
        sys.meta_path.remove(hide)


def use_jemalloc() -> None:
    """Allocate all Arrow memory from its jemalloc pool, where pyarrow has one.

    jemalloc returns freed pages to the system after a short delay; mimalloc, pyarrow's
    default, keeps them, so each records part left memory behind for the next. Before
    pyarrow is imported, ``ARROW_DEFAULT_MEMORY_POOL`` reaches the C++ code's own
    allocations too (the Parquet reader's and the compute kernels' buffers), which
    ``pa.set_memory_pool`` does not. Whole audits, median of 7, peak RSS: 287 -> 275 MiB
    at 250,000 images and 370 -> 340 at 1,000,000, at the same speed (0.86 -> 0.84 s);
    ``groundset curate --no-hash``: 760 -> 655 and 790 -> 700 MiB, 4.6 -> 4.1 s.
    A user's own ``ARROW_DEFAULT_MEMORY_POOL`` wins. The variable is set only where
    pyarrow's wheels are built with jemalloc (Linux on x86-64): elsewhere (Windows,
    macOS on arm64) it would make Arrow log a warning on every command. Once pyarrow is
    imported (a Python caller, or a second call), ``pa.set_memory_pool`` is what is left."""
    if os.environ.get(POOL_VARIABLE, "jemalloc") != "jemalloc":
        return
    if "pyarrow" not in sys.modules:
        if sys.platform == "linux" and os.uname().machine in JEMALLOC_MACHINES:
            os.environ[POOL_VARIABLE] = "jemalloc"
        return
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # built without jemalloc: the default pool stays
        pass
