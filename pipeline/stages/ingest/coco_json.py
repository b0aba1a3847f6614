"""Typed decoding of COCO instances and captions JSON with msgspec.

The parse decides ingest speed: a decoder that declares only the fields groundset needs
lets msgspec skip the polygons (most of a COCO file) without building Python objects
for them. Decoding happens in up to three tiers so that speed never costs robustness:

1. strict Structs (``int`` ids, 4-float bbox): the fastest, right for clean files;
2. loose Structs (``Any`` fields) when a record holds a wrong type: the bad values then
   become per-record rejects during validation instead of failing the file;
3. the standard library parser when the JSON is non-standard (``NaN``, ``Infinity``,
   ``1e999``, which Python's ``json.dump`` writes), converted into the loose Structs.

A file that is still unreadable (empty, truncated, not JSON, not a COCO object) becomes
one ``UserError`` line.
"""

from __future__ import annotations

import gc
import json
import re
from typing import Any

import msgspec

from pipeline.core.errors import UserError


class Image(msgspec.Struct, gc=False):
    id: int
    file_name: str
    width: int
    height: int
    license: int | str | None = None


class Annotation(msgspec.Struct, gc=False):
    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    iscrowd: int = 0
    area: float | None = None


class Category(msgspec.Struct, gc=False):
    id: Any = None
    name: Any = None
    supercategory: Any = None


class License(msgspec.Struct, gc=False):
    id: Any = None
    name: Any = None
    url: Any = None


class Instances(msgspec.Struct):
    images: list[Image]
    categories: list[Category]
    annotations: list[Annotation] = []
    licenses: list[License] | None = None


class LooseImage(msgspec.Struct, gc=False):
    id: Any = None
    file_name: Any = None
    width: Any = None
    height: Any = None
    license: Any = None


class LooseAnnotation(msgspec.Struct, gc=False):
    id: Any = None
    image_id: Any = None
    category_id: Any = None
    bbox: Any = None
    iscrowd: Any = 0
    area: Any = None


class LooseInstances(msgspec.Struct):
    images: list[LooseImage]
    categories: list[Category]
    annotations: list[LooseAnnotation] = []
    licenses: Any = None


class Caption(msgspec.Struct, gc=False):
    image_id: Any = None
    caption: Any = None


class Captions(msgspec.Struct):
    annotations: list[Caption]


_STRICT = msgspec.json.Decoder(Instances)
_LOOSE = msgspec.json.Decoder(LooseInstances)
_CAPTIONS = msgspec.json.Decoder(Captions)


def _describe(e: Exception) -> str:
    text = str(e).replace("`$.", "`").replace("`$`", "the top level")
    return text.replace("Object missing required field", "missing required key")


_BYTE = re.compile(r"\(byte (\d+)\)")


def _non_standard_number_at(data, message: str) -> bool:
    """Whether msgspec stopped at a ``NaN``/``Infinity`` token (which Python's json writes),
    so that only such files pay for the slow standard-library parse."""
    m = _BYTE.search(message)
    if not m:
        return False
    at = int(m.group(1))
    return bytes(data[at : at + 9]).lstrip(b"-").startswith((b"NaN", b"Infinity"))


def _decode(data, loose: msgspec.json.Decoder, typ, what: str, name: str):
    """Tiers 2 and 3: loose Structs, then the stdlib parser for non-standard JSON."""
    try:
        return loose.decode(data)
    except msgspec.ValidationError as e:
        if "Number out of range" not in str(e):
            raise UserError(f"{name} is not a COCO {what} file: {_describe(e)}") from None
        first = e
    except msgspec.DecodeError as e:
        first = e
        if not bytes(data[:65536]).strip() and not bytes(data).strip():
            raise UserError(f"{name} is empty, expected a COCO {what} JSON file") from None
        if not _non_standard_number_at(data, str(e)):
            kind = "truncated" if "truncated" in str(e) else "not valid JSON"
            raise UserError(f"{name} is {kind} ({e}), expected a COCO {what} file") from None
    text = bytes(data)  # only files with NaN / Infinity / 1e999 get here
    try:  # Python's json reads those (slowly); then validate the shape
        obj = json.loads(text)
    except (ValueError, RecursionError):
        msg = str(first)
        kind = "truncated" if "truncated" in msg else "not valid JSON"
        raise UserError(f"{name} is {kind} ({msg}), expected a COCO {what} file") from None
    try:
        return msgspec.convert(obj, typ)
    except msgspec.ValidationError as e:
        raise UserError(f"{name} is not a COCO {what} file: {_describe(e)}") from None


def decode_instances(data, name: str) -> Instances | LooseInstances:
    """Decode a COCO instances file (bytes or any buffer, e.g. an mmap).

    The result's records may hold loosely typed values. The cyclic garbage collector is
    paused meanwhile: a million new bbox tuples would otherwise trigger repeated full
    scans that cost a third of the decode time and find nothing (these objects hold no
    cycles).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        try:
            return _STRICT.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return _decode(data, _LOOSE, LooseInstances, "instances", name)
    except RecursionError:  # a value nested deeper than any COCO field (``Any`` fields)
        raise _too_deep(name, "instances") from None
    finally:
        if was_enabled:
            gc.enable()


def decode_captions(data: bytes, name: str) -> Captions:
    try:
        return _decode(data, _CAPTIONS, Captions, "captions", name)
    except RecursionError:
        raise _too_deep(name, "captions") from None


def _too_deep(name: str, what: str) -> UserError:
    return UserError(
        f"{name} is not a COCO {what} file: a value is nested too deeply to read "
        "(COCO values nest a few levels)"
    )
