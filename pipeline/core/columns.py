"""Turn loosely typed decoded values into validated NumPy columns.

Ingest decodes user files with field types loose enough that one bad record (a string
id, a ``null`` width, a three-number bbox) cannot fail the whole file. These helpers
then make typed columns plus an ``ok`` mask in one pass: a fast path when every value
already has the right type (the normal case, checked with C-level ``set(map(type, ...))``),
and a per-value fallback that runs only on files that really hold bad values.
"""

from __future__ import annotations

from itertools import chain

import numpy as np

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_NUMBER_TYPES = {int, float}  # bool is its own type, so True/False are not numbers here


def _is_int(v) -> bool:
    return type(v) is int and INT64_MIN <= v <= INT64_MAX


def _is_number(v) -> bool:
    return type(v) in _NUMBER_TYPES


def _as_size(v) -> float:
    if not _is_number(v):
        return np.nan
    try:
        return float(v)
    except OverflowError:
        return np.nan


def int_column(values: list, trusted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """int64 column and mask of values that are JSON integers (not bools, not floats).

    ``trusted``: a typed decoder already guaranteed ints, so the type scan is skipped.
    """
    n = len(values)
    if trusted or set(map(type, values)) <= {int}:
        try:
            return np.fromiter(values, np.int64, count=n), np.ones(n, bool)
        except OverflowError:
            pass  # an id beyond int64: fall back to per-value checks
    ok = np.fromiter(map(_is_int, values), bool, count=n)
    out = np.fromiter((v if good else 0 for v, good in zip(values, ok)), np.int64, count=n)
    return out, ok


def size_column(values: list) -> tuple[np.ndarray, np.ndarray]:
    """Image sizes: positive integers (an integral float such as 640.0 is accepted)."""
    n = len(values)
    arr = None
    if set(map(type, values)) <= _NUMBER_TYPES:
        try:
            arr = np.fromiter(values, np.float64, count=n)
        except OverflowError:  # an integer beyond float range: per-value path below
            arr = None
    if arr is None:
        arr = np.fromiter(map(_as_size, values), np.float64, count=n)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(arr) & (arr > 0) & (arr == np.floor(arr)) & (arr <= np.iinfo(np.int32).max)
    return np.where(ok, arr, 0).astype(np.int32), ok


def number_rows(values: list, width: int, trusted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(n, width) float64 matrix from lists of numbers; mask of rows that are all finite numbers.

    Rows that are not a list of exactly ``width`` numbers, or hold NaN/inf, are masked out
    and filled with NaN. ``trusted``: a typed decoder already guaranteed ``width`` floats
    per row, so the type scans (half the cost on a million rows) are skipped.
    """
    n = len(values)
    if trusted:
        arr = np.fromiter(chain.from_iterable(values), np.float64, count=n * width).reshape(
            n, width
        )
        return arr, np.isfinite(arr).all(axis=1)
    if set(map(type, values)) <= {list, tuple} and set(map(len, values)) <= {width}:
        flat = list(chain.from_iterable(values))
        if set(map(type, flat)) <= _NUMBER_TYPES:
            try:
                arr = np.fromiter(flat, np.float64, count=n * width).reshape(n, width)
            except OverflowError:
                arr = None
            if arr is not None:
                return arr, np.isfinite(arr).all(axis=1)
    arr = np.full((n, width), np.nan)
    shaped = np.fromiter(
        (type(v) in (list, tuple) and len(v) == width and all(map(_is_number, v)) for v in values),
        bool,
        count=n,
    )
    for i in np.flatnonzero(shaped):  # only rows that passed the checks; bad files only
        try:
            arr[i] = values[i]
        except OverflowError:
            pass
    ok = shaped & np.isfinite(arr).all(axis=1)
    return arr, ok


def area_column(values: list) -> np.ndarray:
    """Optional non-negative areas as float64, NaN where absent or not a finite number >= 0
    (an area is information kept for export, not a reason to drop the box)."""
    n = len(values)
    if set(map(type, values)) <= _NUMBER_TYPES:
        try:
            arr = np.fromiter(values, np.float64, count=n)
        except OverflowError:
            arr = np.fromiter(map(_as_size, values), np.float64, count=n)
    else:
        arr = np.fromiter(map(_as_size, values), np.float64, count=n)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(arr) & (arr >= 0), arr, np.nan)


def flag_column(values: list) -> np.ndarray:
    """Truthiness of a 0/1 flag such as ``iscrowd``; anything but 0/false/null counts as set."""
    n = len(values)
    if set(map(type, values)) <= {int, bool}:
        return np.fromiter(values, np.int64, count=n) != 0
    return np.fromiter((bool(v) for v in values), bool, count=n)


def str_column(values: list, default: str = "") -> tuple[list, np.ndarray]:
    """Strings as a list (Arrow takes lists fastest) plus a mask of values that were strings."""
    if set(map(type, values)) <= {str}:
        return values, np.ones(len(values), bool)
    ok = np.fromiter((type(v) is str for v in values), bool, count=len(values))
    return [v if type(v) is str else default for v in values], ok
