"""Process-wide pyarrow settings for commands that never hand pyarrow a pandas object.

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

import sys


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
