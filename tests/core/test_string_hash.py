"""The id hashes behind the unique-id check: equal strings hash alike however Arrow
holds them, different strings apart, and the check's answers do not depend on them."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.core import validate
from pipeline.core.errors import UserError
from pipeline.core.string_hash import repeats_possible, string_hashes


def _tricky(n: int = 20_000) -> list[str]:
    """Distinct strings that a careless word hash would confuse: every length 0-40, shared
    prefixes and suffixes, trailing NUL bytes, and multi-byte characters."""
    rng = np.random.default_rng(0)
    out = {"", "\0", "\0\0", "a", "a\0", "a\0\0", "é", "e\u0301", "abcdefgh", "abcdefgh\0"}
    out |= {"x" * k for k in range(41)}
    out |= {"coco-2017/" + "0" * 8 + f"{k:04d}.jpg" for k in range(500)}
    out |= {f"{k}/" + "same-middle-part" * 2 + "/0001.jpg" for k in range(500)}
    while len(out) < n:
        k = int(rng.integers(0, 41))
        out.add("".join(rng.choice(list("ab\0:/7é"), size=k)))
    return sorted(out)


def test_distinct_strings_hash_apart():
    ids = _tricky()
    h = string_hashes(pa.array(ids))
    assert len(np.unique(h)) == len(ids)
    assert not repeats_possible(pa.array(ids))


def test_equal_strings_hash_alike_however_held():
    """Chunks, slices (a non-zero offset into the data), large_string and blocks larger
    than one hashing block all give each string the same hash."""
    ids = _tricky(5_000)
    want = string_hashes(pa.array(ids))
    chunked = pa.chunked_array([pa.array(ids[:1234]), pa.array(ids[1234:])])
    sliced = pa.array(["pad"] * 7 + ids).slice(7)
    large = pa.array(ids, pa.large_string())
    for held in (chunked, sliced, large):
        assert np.array_equal(string_hashes(held), want)
    tiled = ids * 30  # 150,000 strings: several hashing blocks
    assert np.array_equal(string_hashes(pa.array(tiled)), np.tile(want, 30))


def test_a_repeat_is_always_nominated():
    ids = _tricky(3_000)
    for i, j in ((0, 1), (5, 2999), (1500, 40)):
        repeated = list(ids)
        repeated[j] = ids[i]
        assert repeats_possible(pa.array(repeated))
        assert repeats_possible(
            pa.chunked_array([pa.array(repeated[:100]), pa.array(repeated[100:])])
        )


@pytest.mark.parametrize("hashed", [True, False])
def test_unique_id_check_is_the_same_with_or_without_the_hashes(monkeypatch, hashed):
    """With every hash nominated (as a collision would), the exact check alone decides:
    unique ids pass, a repeat is named at its second row."""
    if not hashed:
        monkeypatch.setattr(validate, "repeats_possible", lambda ids: True)
    ids = _tricky(2_000)
    where = lambda row: f"row {row}"
    validate.check_unique_ids(Path("ds"), pa.chunked_array([pa.array(ids)]), where)
    repeated = ids[:1500] + [ids[700]] + ids[1500:]
    with pytest.raises(UserError, match=r"row 1500: image_id .* appears twice"):
        validate.check_unique_ids(Path("ds"), pa.array(repeated), where)
