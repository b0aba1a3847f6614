"""Where a box's phrase stands in its caption: whole words only, plurals allowed.

GLIGEN's ``tokens_positive`` is the character span of a phrase in the caption. A plain
substring search put "car" into "carrying", "apple" into "pineapples" and "cup" into
"cupboard": on the two real COCO val subsets with their first captions, 22 of the 263
spans it found named a different word, and 51 more cut a plural in two. A span here is
therefore accepted only where it starts and ends on a word boundary, and it covers the
plural when the caption has one, since a caption says "two cars" for two car boxes
(there: 359 spans, none inside a word):

- the phrase itself, or its last word with ``s`` (``car`` -> ``cars``) or, after
  s/x/z/ch/sh/o, ``es`` (``bus`` -> ``buses``, ``box`` -> ``boxes``);
- consonant + ``y`` -> ``ies`` (``puppy`` -> ``puppies``), and a short table of
  irregular plurals (``person`` -> ``people``, ``knife`` -> ``knives``), last word only;
- case-insensitive; a word character is a letter or a digit (``isalnum``), so a
  possessive ``dog's`` or a hyphenated ``hot-dog stand`` still contains ``dog``.

The first such occurrence wins. Where none exists the span is absent (``-1``) and the
caption is left as it is: it conditions the UNet, and GLIGEN's ``TSVDataset`` grounds
with the phrase's text embedding, never with the span.

Vectorised with NumPy's string ufuncs over the distinct (image, phrase) pairs, the
plural rules over the distinct phrases: the Python loops run once per occurrence tried
(a few) and once per irregular plural (a dozen), never once per box. 200,000 boxes with
random phrases over 20,000 captions take 0.3 s on the shared 2-core machine.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core import arrow_kernels as kernels

STR = np.dtypes.StringDType()

# last word -> plural, for the plurals the suffix rules miss (COCO's and everyday nouns)
IRREGULAR = {
    "person": "people",
    "man": "men",
    "woman": "women",
    "child": "children",
    "mouse": "mice",
    "foot": "feet",
    "tooth": "teeth",
    "goose": "geese",
    "knife": "knives",
    "leaf": "leaves",
    "shelf": "shelves",
    "wolf": "wolves",
    "loaf": "loaves",
}


def plural_forms(phrases: pa.Array) -> np.ndarray:
    """The one plural that is not the phrase plus a suffix ("" where there is none)."""
    lower = pc.utf8_lower(phrases)
    alt = pc.if_else(
        pc.match_substring_regex(lower, r"[^aeiou\W]y$"),
        pc.replace_substring_regex(lower, r"y$", "ies"),
        "",
    )
    for single, plural in IRREGULAR.items():
        hit = pc.match_substring_regex(lower, rf"(^|[^\w]){single}$")
        alt = pc.if_else(hit, pc.replace_substring_regex(lower, rf"{single}$", plural), alt)
    return np.array(alt.fill_null("").to_pylist(), dtype=STR)


def _word(chars: np.ndarray) -> np.ndarray:
    """True where a one-character string is a word character ("" is not)."""
    return np.strings.isalnum(chars)


def _lower_same_length(strings: np.ndarray) -> np.ndarray:
    """Lower case, character for character: spans found in it index the original.

    ``lower()`` may lengthen a string ("İ" -> "i̇"); the few strings where it does are
    lowered one character at a time in Python, keeping such characters as they are.
    """
    lower = np.strings.lower(strings)
    odd = np.flatnonzero(np.strings.str_len(lower) != np.strings.str_len(strings))
    for i in odd:
        lower[i] = "".join(c if len(c.lower()) != 1 else c.lower() for c in str(strings[i]))
    return lower


def _find_words(
    text: np.ndarray, sub: np.ndarray, s_ok: np.ndarray, es_ok: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """First occurrence of ``sub`` in ``text`` (elementwise) that starts on a word boundary
    and ends on one, directly or after a plural ``s`` (where ``s_ok``) or ``es`` (where
    ``es_ok``); returns (start, end) with -1 where there is none."""
    n = text.size
    start = np.full(n, -1, np.int64)
    end = np.full(n, -1, np.int64)
    sub_len = np.strings.str_len(sub).astype(np.int64)
    # a phrase that begins or ends with punctuation needs no boundary on that side
    left_free = ~_word(np.strings.slice(sub, 0, 1))
    right_free = ~_word(np.strings.slice(sub, np.maximum(sub_len - 1, 0), sub_len))
    todo = np.flatnonzero(sub_len > 0)
    at = np.zeros(n, np.int64)
    while todo.size:
        t, s = text[todo], sub[todo]
        pos = np.strings.find(t, s, at[todo]).astype(np.int64)
        keep = pos >= 0
        todo, t, pos = todo[keep], t[keep], pos[keep]
        if not todo.size:
            break
        before = np.strings.slice(t, np.maximum(pos - 1, 0), pos)
        left_ok = left_free[todo] | (pos == 0) | ~_word(before)
        e = pos + sub_len[todo]
        c1, c2, c3 = (np.strings.slice(t, e + k, e + k + 1) for k in range(3))
        whole = right_free[todo] | ~_word(c1)
        plus_s = s_ok[todo] & (c1 == "s") & ~_word(c2)
        plus_es = es_ok[todo] & (c1 == "e") & (c2 == "s") & ~_word(c3)
        ok = left_ok & (whole | plus_s | plus_es)
        hit = todo[ok]
        start[hit] = pos[ok]
        end[hit] = (e + np.where(whole, 0, np.where(plus_s, 1, 2)))[ok]
        todo = todo[~ok]
        at[todo] = pos[~ok] + 1
    return start, end


def word_spans(
    captions: np.ndarray, image: np.ndarray, phrases: pa.Array
) -> tuple[np.ndarray, np.ndarray]:
    """Each box's [start, end) span of its phrase in its image's caption, -1 where no
    whole-word occurrence exists. ``captions``: one per image (a StringDType array);
    ``image``: each box's image; ``phrases``: each box's phrase.

    The search runs once per distinct (image, phrase) pair, and the plural rules once
    per distinct phrase: an image's ten "person" boxes share one search.
    """
    n = len(phrases)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    phrases = phrases.fill_null("") if phrases.null_count else phrases
    enc = kernels.one_array(pc.dictionary_encode(phrases))
    distinct = enc.dictionary
    pair, inverse = np.unique(
        np.asarray(image, np.int64) * len(distinct) + np.asarray(enc.indices, np.int64),
        return_inverse=True,
    )
    pair_image, pair_phrase = pair // len(distinct), pair % len(distinct)
    text = _lower_same_length(np.asarray(captions, dtype=STR))[pair_image]
    ph = _lower_same_length(np.array(distinct.to_pylist(), dtype=STR))[pair_phrase]
    lower = pc.utf8_lower(distinct)
    es_only = np.asarray(pc.match_substring_regex(lower, r"(s|x|z|ch|sh)$"))[pair_phrase]
    es_too = np.asarray(pc.match_substring_regex(lower, r"o$"))[pair_phrase]
    start, end = _find_words(text, ph, ~es_only, es_only | es_too)
    alt = plural_forms(distinct)[pair_phrase]
    none = np.zeros(alt.size, bool)
    a_start, a_end = _find_words(text, alt, none, none)
    use_alt = (a_start >= 0) & ((start < 0) | (a_start < start))
    start, end = np.where(use_alt, a_start, start), np.where(use_alt, a_end, end)
    return start[inverse], end[inverse]
