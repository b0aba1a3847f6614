"""The Arrow compute kernels the audit's path uses, called without ``pyarrow.compute``.

Importing ``pyarrow.compute`` writes a Python wrapper, docstring included, for each of
its several hundred kernels: 25 ms of every process that imports it (a bare interpreter
importing NumPy and pyarrow with it against without it, 10 runs, three times), about 3%
of a whole ``groundset audit`` of 250,000 images. Those wrappers end in
``call_function``, which runs a kernel by name; this module calls it directly for the
few kernels the audit needs. Array methods that go through ``pyarrow.compute``
(``take``, ``fill_null``, ``cast``, ``unique``, ``filter``) import it too, so the code on
the audit's path calls these functions instead; ``tests/commands/test_audit_imports.py``
runs an audit and checks that ``pyarrow.compute`` stayed unimported. ``one_array``
stands in for ``combine_chunks`` in the same way: for its copy.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

try:  # where pyarrow.compute itself takes them from
    from pyarrow._compute import MatchSubstringOptions, call_function
except ImportError:  # pragma: no cover - a pyarrow that moved them: the public names
    from pyarrow.compute import MatchSubstringOptions, call_function


def take(data, indices):
    """Rows ``indices`` of an array, chunked array or table."""
    return call_function("take", [data, indices])


def filter_rows(data, mask):
    return call_function("filter", [data, mask])


def unique(values):
    return call_function("unique", [values])


def dictionary_encode(values):
    return call_function("dictionary_encode", [values])


def list_flatten(lists):
    return call_function("list_flatten", [lists])


def list_value_length(lists):
    return call_function("list_value_length", [lists])


def total(values) -> pa.Scalar:
    return call_function("sum", [values])


def utf8_length(values):
    return call_function("utf8_length", [values])


def is_null(values):
    return call_function("is_null", [values])


def or_kleene(a, b):
    return call_function("or_kleene", [a, b])


def match_substring_regex(values, pattern: str):
    return call_function("match_substring_regex", [values], MatchSubstringOptions(pattern))


def fill_null(values, fill):
    """``values`` with nulls replaced by ``fill`` (a Python value of their type)."""
    return call_function("coalesce", [values, pa.scalar(fill, values.type)])


def one_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``column`` as one Arrow array: a lone chunk as it is, several joined.

    pyarrow's ``combine_chunks`` copies a lone chunk too: reading a 200,000-image part
    copied its box coordinates twice (36 MB, 9,000 first-touch page faults and 10-30 ms
    for the first part), once to join the two halves read on two threads and once to
    flatten them."""
    if isinstance(column, pa.Array):
        return column
    if column.num_chunks == 1:
        return column.chunk(0)
    if column.num_chunks == 0:
        return pa.array([], column.type)
    return column.combine_chunks()


def string_bytes(arr: pa.Array, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """A string array's offsets (int64, from 0) and a copy of its bytes with ``pad`` zero
    bytes after them, so that reading a few bytes past any string's end stays inside:
    the byte-level tests on ids and file names (``string_hash``, ``names``)."""
    _, offsets_buf, data_buf = arr.buffers()
    kind = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(offsets_buf, kind)[arr.offset : arr.offset + len(arr) + 1]
    offsets = offsets.astype(np.int64)
    first = int(offsets[0])
    offsets -= first
    data = np.zeros(int(offsets[-1]) + pad, np.uint8)
    if data_buf is not None:
        data[: offsets[-1]] = np.frombuffer(data_buf, np.uint8)[first : first + offsets[-1]]
    return offsets, data
