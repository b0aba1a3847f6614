"""Safety checks for file names that come from user data.

A record's ``file`` is joined onto an images root later (by the trainer, the exporter,
the labeller). An absolute path, a ``..`` component or a NUL byte would let a dataset
point outside that root, so such names reject the image at ingest time.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.core import arrow_kernels as kernels

UNSAFE_FILE_NAME = "unsafe_file_name"


def is_unsafe_name(name) -> bool:
    if not isinstance(name, str) or name == "" or "\x00" in name:
        return True
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return True
    return any(part == ".." for part in norm.split("/"))


# The same rules as ``is_unsafe_name`` as one RE2 pattern, so a column of names is checked
# in Arrow's C++ kernels: empty, NUL, absolute (``/``, ``\\``, ``C:``) or a ``..`` part.
_UNSAFE_RE = r"(?s)^$|\x00|^[/\\]|^.:|(^|[/\\])\.\.([/\\]|$)"


def unsafe_names(names) -> np.ndarray:
    """Boolean mask over a column of names (vectorised when every name is a string)."""
    if isinstance(names, (pa.Array, pa.ChunkedArray)) or set(map(type, names)) <= {str}:
        arr = (
            names
            if isinstance(names, (pa.Array, pa.ChunkedArray))
            else pa.array(names, pa.string())
        )
        hit = kernels.match_substring_regex(arr, _UNSAFE_RE)
        # a null name is unsafe: or-ed with its null mask, not fill_null(hit, True), whose
        # Python scalar makes pyarrow import pandas (0.1-0.3 s of every dataset read)
        hit = kernels.or_kleene(hit, kernels.is_null(hit)) if hit.null_count else hit
        return np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)
    return np.fromiter((is_unsafe_name(n) for n in names), dtype=bool, count=len(names))
