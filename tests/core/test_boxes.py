"""Property tests for the shared box conversion and clipping (pipeline/core/boxes.py).

Every ingest path goes through these functions, so they are checked against a plain
scalar reference on arbitrary boxes, including NaN, infinities and boxes far outside.
"""

import math

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import boxes as bx
from pipeline.core.names import is_unsafe_name, unsafe_names

coord = st.floats(min_value=-2000, max_value=4000, allow_nan=False, allow_infinity=False)
any_coord = st.one_of(coord, st.just(math.nan), st.just(math.inf), st.just(-math.inf))
size = st.integers(min_value=1, max_value=3000)
box = st.tuples(any_coord, any_coord, any_coord, any_coord, size, size)


def reference(x0, y0, x1, y1, w, h):
    """Scalar statement of the clipping rules: (reason, normalised float32 box)."""
    if not all(map(math.isfinite, (x0, y0, x1, y1))):
        return bx.NON_NUMERIC, None
    lx, hx, ly, hy = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
    if hx <= 0 or hy <= 0 or lx >= w or ly >= h:
        return bx.OUTSIDE_IMAGE, None
    out = np.array(
        [
            min(max(lx, 0), w) / w,
            min(max(ly, 0), h) / h,
            min(max(hx, 0), w) / w,
            min(max(hy, 0), h) / h,
        ],
        np.float32,
    )
    if out[2] <= out[0] or out[3] <= out[1]:
        return bx.ZERO_AREA, None
    return None, out


@settings(max_examples=300, deadline=None)
@given(st.lists(box, min_size=1, max_size=40))
def test_clip_matches_scalar_reference(rows):
    a = np.array(rows, dtype=np.float64)
    xyxy, reason = bx.clip_xyxy_pixels(a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5])
    assert xyxy.dtype == np.float32 and xyxy.shape == (len(rows), 4)
    for i, r in enumerate(rows):
        want_reason, want = reference(*r)
        assert reason[i] == want_reason, (r, reason[i])
        if want is not None:
            np.testing.assert_array_equal(xyxy[i], want)


@settings(max_examples=200, deadline=None)
@given(st.lists(box, min_size=1, max_size=40))
def test_kept_boxes_are_normalised_and_ordered(rows):
    a = np.array(rows, dtype=np.float64)
    xyxy, reason = bx.clip_xyxy_pixels(*a.T)
    kept = xyxy[reason == None]
    assert np.all((kept >= 0) & (kept <= 1))
    assert np.all(kept[:, 0] < kept[:, 2]) and np.all(kept[:, 1] < kept[:, 3])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(size, size, st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
        min_size=1,
        max_size=30,
    )
)
def test_boxes_inside_the_image_survive_unchanged(rows):
    """A box wholly inside its image is only rescaled: times the size gives it back."""
    W, H, a, b, c, d = (np.array(col, np.float64) for col in zip(*rows))
    x0, x1 = np.minimum(a, c) * W, np.maximum(a, c) * W
    y0, y1 = np.minimum(b, d) * H, np.maximum(b, d) * H
    xyxy, reason = bx.clip_xyxy_pixels(x0, y0, x1, y1, W, H)
    proper = ((x1 - x0) > 1e-3) & ((y1 - y0) > 1e-3)
    assert all(r is None for r in reason[proper])
    back = xyxy[proper].astype(np.float64) * np.stack([W, H, W, H], 1)[proper]
    want = np.stack([x0, y0, x1, y1], 1)[proper]
    # float32 storage: relative error <= 2^-24 (6e-8) per corner, so rtol 1e-6; near 0 px a
    # relative bound means nothing, so 1e-3 px absolute (a wrong scale is off by whole pixels)
    np.testing.assert_allclose(back, want, rtol=1e-6, atol=1e-3)


@settings(deadline=None)
@given(st.lists(st.tuples(coord, coord, coord, coord), min_size=1, max_size=30))
def test_xywh_and_xyxy_are_inverse(rows):
    x, y, w, h = (np.array(c) for c in zip(*rows))
    back = bx.xyxy_to_xywh(*bx.xywh_to_xyxy(x, y, w, h))
    for got, want in zip(back, (x, y, w, h)):
        # float64 add then subtract of values <= 6000: at most a few ulp (~1e-12) lost
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@settings(deadline=None)
@given(st.lists(st.tuples(coord, coord, st.floats(0, 4000), st.floats(0, 4000)), min_size=1))
def test_cxcywh_keeps_centre_and_size(rows):
    cx, cy, w, h = (np.array(c) for c in zip(*rows))
    x0, y0, x1, y1 = bx.cxcywh_to_xyxy(cx, cy, w, h)
    # float64 halving, adding and subtracting values <= 6000: a few ulp (~1e-12), far under 1e-9
    np.testing.assert_allclose((x0 + x1) / 2, cx, atol=1e-9)
    np.testing.assert_allclose(x1 - x0, w, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(y1 - y0, h, rtol=1e-12, atol=1e-9)


@settings(deadline=None)
@given(st.lists(st.tuples(coord, coord, coord, coord), min_size=1))
def test_box_area_is_nonnegative_and_exact_for_ordered_boxes(rows):
    x0, y0, x1, y1 = (np.array(c) for c in zip(*rows))
    area = bx.box_area(x0, y0, x1, y1)
    assert np.all(area >= 0)
    ordered = (x1 >= x0) & (y1 >= y0)
    # float64, the same subtractions and product: assert_allclose's default rtol 1e-7 admits no bug
    np.testing.assert_allclose(area[ordered], ((x1 - x0) * (y1 - y0))[ordered])


def test_clip_examples():
    xyxy, reason = bx.clip_xyxy_pixels(
        [-10, 0, 50, 100, 5, 0, 0],
        [-10, 0, 50, 0, 5, 0, 10],
        [50, 100, 150, 120, 5, np.nan, 200],
        [50, 100, 150, 20, 9, 10, 10],
        100,
        100,
    )
    assert reason.tolist() == [
        None,
        None,
        None,
        bx.OUTSIDE_IMAGE,
        bx.ZERO_AREA,
        bx.NON_NUMERIC,
        bx.ZERO_AREA,
    ]
    # exact binary fractions in float32: the default rtol 1e-7 is equality in effect
    np.testing.assert_allclose(xyxy[0], [0, 0, 0.5, 0.5])
    np.testing.assert_allclose(xyxy[2], [0.5, 0.5, 1.0, 1.0])


names = st.text(alphabet=st.sampled_from(list("ab./\\:\x00 \n\u00e9\U0001f600")), max_size=12)


@settings(max_examples=400, deadline=None)
@given(st.lists(names, max_size=20))
def test_vectorised_unsafe_names_agree_with_the_scalar_rule(values):
    assert unsafe_names(values).tolist() == [is_unsafe_name(v) for v in values]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(names, st.none()), max_size=40), st.integers(0, 5))
def test_unsafe_names_of_sliced_chunked_and_large_arrays_agree_with_the_scalar_rule(values, cut):
    """Arrow columns as a dataset holds them: a slice (a non-zero offset into the string
    bytes), several chunks, large_string, nulls (unsafe)."""
    want = [v is None or is_unsafe_name(v) for v in values]
    padded = pa.array(["../pad"] * cut + values, pa.string()).slice(cut)
    chunked = pa.chunked_array([padded.slice(0, cut), padded.slice(cut)], pa.string())
    for column in (padded, chunked, padded.cast(pa.large_string())):
        assert unsafe_names(column).tolist() == want


def test_unsafe_name_examples():
    bad = ["/etc/passwd", "../x.jpg", "a/../../x", "a\\..\\x", "C:\\x.jpg", "x\x00.jpg", ""]
    good = ["x.jpg", "a/b.jpg", "..x.jpg", "a/..b/c.jpg", "a..", "dir/.hidden"]
    assert unsafe_names(bad).all() and not unsafe_names(good).any()
    assert unsafe_names([None, 3, "ok.jpg"]).tolist() == [True, True, False]
