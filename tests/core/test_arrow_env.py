"""``skip_pandas_probe``: pyarrow converts NumPy and Python values without importing
pandas, and an explicit pandas call still works (a fresh process: pytest has pandas)."""

import subprocess
import sys

CHILD = """
import sys
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pipeline.core.arrow_env import skip_pandas_probe

skip_pandas_probe()
t = pa.table({"x": np.arange(3.0), "ok": np.array([True, False, True])})
pc.fill_null(pa.array([True, None]), True)
pa.array(["a", None])
assert "pandas" not in sys.modules, "pyarrow imported pandas"
assert t.to_pandas().shape == (3, 2)  # an explicit pandas call imports it and works
print("ok")
"""


def test_conversions_skip_pandas_and_to_pandas_still_works():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
