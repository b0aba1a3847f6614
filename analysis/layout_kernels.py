"""The audit's compiled kernels (``_layout_kernels.c`` beside this): the pairwise pass of
the layout statistics, and the report's box-centre bins.

Box-pair statistics (nearest neighbours, alignment partners, seams, cuts, the free cross)
visit every pair of boxes of an image. In NumPy that took about a hundred passes over
``(n, n, m)`` temporaries per block of images; compiled, each pair is visited once per
family with its counts in registers: 8x less time for the same integers (the 250,000-image
audit bench, see docs/audit.md). ``pip install`` builds it (``setup.py``); ctypes calls it,
releasing the GIL, so blocks run on the audit's threads at once.
"""

from __future__ import annotations

import ctypes
import hashlib
from functools import cache
from pathlib import Path

import numpy as np

from pipeline.core.errors import UserError

SOURCE = Path(__file__).with_name("_layout_kernels.c")
REBUILD = "reinstall the project with `pip install -e .` (it needs a C compiler, e.g. gcc)"
# pairwise_block's arguments after its inputs, in the C entry point's order
TOLERANCES = ("qtol", "cut_qtol", "cut_shift", "qcross", "quant", "big", "size_tol")
TOLERANCES += ("row_shift", "base_shift")
PER_BOX = ("d2min", "strength_x", "strength_y")  # (n, m); the rest one value per image
OUTPUTS = ("d2min", "row", "col", "base", "strength_x", "strength_y", "cut_x", "cut_y")
OUTPUTS += ("cross_min",)


@cache
def _library() -> ctypes.CDLL:
    """The built library; refused when it is missing, or when the source beside it (a
    source checkout) is not the one it was built from: an edited kernel must not run
    as its old build, and DVC, which hashes the source, would trust the outputs."""
    try:
        from analysis import _layout_kernels
    except ImportError:
        raise UserError(f"groundset's compiled layout kernel is not built: {REBUILD}") from None
    if SOURCE.is_file():
        digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
        if digest != _layout_kernels.source_sha256:
            raise UserError(
                f"groundset's compiled layout kernel was built from another {SOURCE}: {REBUILD}"
            )
    lib = ctypes.CDLL(_layout_kernels.__file__)
    lib.pairwise_block.restype = None
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.pairwise_block.argtypes = [i, i, i] + [p] * 12 + [i] * len(TOLERANCES) + [p] * len(OUTPUTS)
    lib.centre_bin_keys.restype = None
    lib.centre_bin_keys.argtypes = [ctypes.c_int64] + [p] * 5 + [i, p]
    return lib


def _c(a: np.ndarray, dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


def pairwise_block(q, lw, lh, inside_x, inside_y, evidence: bool, tol: dict) -> dict:
    """Pairwise statistics of a block of images with n boxes each.

    ``q``: the quantised ``x0, y0, x1, y1``, int16 ``(n, m)``; ``lw``, ``lh``: quantised
    log sizes; ``inside_x``, ``inside_y``: far edges inside the seam margins (these four
    are read only when ``evidence``, and may be None otherwise). Returns
    ``d2min`` (each box's squared distance to its nearest other centre, in doubled
    quantised units, float32 ``(n, m)``) and, when ``evidence``, the partner counts
    ``row``, ``col``, ``base`` and ``cut_x``, ``cut_y``, ``cross_min`` per image and the
    seam strengths ``strength_x``, ``strength_y`` per box line (int16).
    ``tol`` holds the quantised tolerances, named as the C entry point's arguments.
    """
    q = [_c(a, np.int16) for a in q]
    n, m = q[0].shape
    c2x, c2y = q[0] + q[2], q[1] + q[3]
    if evidence:
        extra = [q[2] - q[0], q[3] - q[1]] + [_c(a, np.int16) for a in (lw, lh, inside_x, inside_y)]
    else:  # not read: any valid (n, m) int16 array
        extra = [c2x] * 6
    inputs = [*q, c2x, c2y, *extra]
    out = {
        k: np.empty((n, m) if k in PER_BOX else m, np.float32 if k == "d2min" else np.int16)
        for k in OUTPUTS
    }
    _library().pairwise_block(
        n,
        m,
        int(evidence),
        *(a.ctypes.data for a in inputs),
        *(int(tol[k]) for k in TOLERANCES),
        *(out[k].ctypes.data for k in OUTPUTS),
    )
    return out if evidence else {"d2min": out["d2min"]}


def centre_bin_keys(x0, y0, x1, y1, edges: np.ndarray) -> np.ndarray:
    """Each box centre's bin, ``y_bin * bins + x_bin`` (int32), on the uniform ``edges``
    exactly as ``np.histogram2d`` bins it (float64 centres; the last edge closes the
    last bin). Coordinates as stored, float32."""
    coords = [_c(a, np.float32) for a in (x0, y0, x1, y1)]
    edges = _c(edges, np.float64)
    key = np.empty(coords[0].size, np.int32)
    _library().centre_bin_keys(
        key.size,
        *(a.ctypes.data for a in coords),
        edges.ctypes.data,
        edges.size - 1,
        key.ctypes.data,
    )
    return key
