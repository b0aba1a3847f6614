"""Fingerprints: plain sha256 for files, location-free and order-free for folders."""

import hashlib
import os
import shutil

from pipeline.core.hashing import fingerprint, sha256_file, sha256_json


def test_file_fingerprint_is_plain_sha256(tmp_path):
    f = tmp_path / "weights.pt"
    f.write_bytes(b"weights")
    assert sha256_file(f) == fingerprint(f) == hashlib.sha256(b"weights").hexdigest()


def test_folder_fingerprint_ignores_location_but_not_content(tmp_path):
    a = tmp_path / "a_openvino_model"
    (a / "sub").mkdir(parents=True)
    (a / "model.xml").write_text("<xml/>")
    (a / "sub" / "model.bin").write_bytes(b"\x00\x01")
    b = tmp_path / "elsewhere" / "copy"
    shutil.copytree(a, b)
    assert fingerprint(a) == fingerprint(b)
    (b / "sub" / "model.bin").write_bytes(b"\x00\x02")
    assert fingerprint(a) != fingerprint(b)
    before = fingerprint(b)
    (b / "sub" / "model.bin").rename(b / "sub" / "other.bin")  # same bytes, other name
    assert fingerprint(b) != before


def test_listing_modes(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"abc")
    size = fingerprint(tmp_path, by="size")
    mtime = fingerprint(tmp_path, by="mtime")
    (tmp_path / "x.jpg").write_bytes(b"xyz")  # same size, new content and mtime
    os.utime(tmp_path / "x.jpg", ns=(1, 1))
    assert fingerprint(tmp_path, by="size") == size
    assert fingerprint(tmp_path, by="mtime") != mtime
    assert fingerprint(tmp_path, by="size", files=[]) != size


def test_json_fingerprint_ignores_key_order():
    assert sha256_json({"a": 1, "b": [1, 2]}) == sha256_json({"b": [1, 2], "a": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 2})
