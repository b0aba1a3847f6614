"""Properties of the loose-value column builders (pipeline/core/columns.py).

Ingest's robustness rests on these: whatever JSON value sits in a field, the column gets
a correct value or a False in its mask, never an exception and never a silent coercion
(a string "12" or a bool is not a number).
"""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.columns import flag_column, int_column, number_rows, size_column, str_column

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.text(max_size=3),
    st.floats(allow_nan=True, allow_infinity=True),
)
json_value = st.one_of(json_scalar, st.lists(json_scalar, max_size=5))


def is_int(v):
    return type(v) is int and -(2**63) <= v < 2**63


@settings(max_examples=300, deadline=None)
@given(st.lists(json_value, max_size=30))
def test_int_column_accepts_exactly_the_int64_integers(values):
    arr, ok = int_column(values)
    assert ok.tolist() == [is_int(v) for v in values]
    assert [int(a) for a, v in zip(arr, values) if is_int(v)] == [v for v in values if is_int(v)]


@settings(max_examples=300, deadline=None)
@given(st.lists(json_value, max_size=30))
def test_size_column_accepts_positive_integral_numbers(values):
    arr, ok = size_column(values)
    for a, good, v in zip(arr, ok, values):
        want = (
            type(v) in (int, float)
            and math.isfinite(float(v) if abs(v) < 1e308 else math.inf)
            and v > 0
            and float(v).is_integer()
            and v <= 2**31 - 1
        )
        assert good == want, v
        if good:
            assert a == v


four = st.lists(
    st.one_of(st.floats(-1e6, 1e6), st.integers(-(10**6), 10**6)), min_size=4, max_size=4
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(four, json_value), max_size=30))
def test_number_rows_masks_anything_but_four_finite_numbers(values):
    arr, ok = number_rows(values, 4)
    for row, good, v in zip(arr, ok, values):
        want = (
            type(v) in (list, tuple)
            and len(v) == 4
            and all(type(x) in (int, float) and math.isfinite(x) for x in v)
        )
        assert good == want, v
        if good:
            np.testing.assert_array_equal(row, np.array(v, np.float64))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(*[st.floats(allow_nan=True, allow_infinity=True)] * 4), max_size=30))
def test_trusted_path_equals_checked_path(values):
    a, ok_a = number_rows(values, 4)
    b, ok_b = number_rows(values, 4, trusted=True)
    np.testing.assert_array_equal(a, b)
    assert ok_a.tolist() == ok_b.tolist()


def test_flags_and_strings():
    assert flag_column([0, 1, True, False]).tolist() == [False, True, True, False]
    assert flag_column([None, "1", 0, 2]).tolist() == [False, True, False, True]
    values, ok = str_column(["a", 3, None])
    assert values == ["a", "", ""] and ok.tolist() == [True, False, False]
