"""Safety checks for file names that come from user data.

A record's ``file`` is joined onto an images root later (by the trainer, the exporter,
the labeller). An absolute path, a ``..`` component or a NUL byte would let a dataset
point outside that root, so such names reject the image at ingest time.
"""

from __future__ import annotations

import numpy as np

UNSAFE_FILE_NAME = "unsafe_file_name"


def is_unsafe_name(name) -> bool:
    if not isinstance(name, str) or name == "" or "\x00" in name:
        return True
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return True
    return any(part == ".." for part in norm.split("/"))


def unsafe_names(names) -> np.ndarray:
    """Boolean mask over a column of names; per-name checks are cheap string tests."""
    return np.fromiter((is_unsafe_name(n) for n in names), dtype=bool, count=len(names))
