"""Image hygiene: every odd file becomes displayed-orientation RGB or a named reject."""

import os

import numpy as np
import pytest
from PIL import Image

from pipeline.core import images as I

H, W = 24, 40


def _pattern() -> np.ndarray:
    """An asymmetric RGB image: a red block top-left, a blue block bottom-right."""
    a = np.full((H, W, 3), 128, np.uint8)
    a[2:8, 3:12] = (255, 0, 0)
    a[15:22, 28:38] = (0, 0, 255)
    return a


def test_rgb_jpeg_round_trips(tmp_path):
    Image.fromarray(_pattern()).save(tmp_path / "a.png")
    assert np.array_equal(I.load_image(tmp_path / "a.png"), _pattern())


@pytest.mark.parametrize(
    "orientation, undo",
    [
        (3, lambda a: np.rot90(a, 2)),  # stored upside down
        (6, lambda a: np.rot90(a, 1)),  # stored rotated: viewer turns it 90° clockwise
        (8, lambda a: np.rot90(a, -1)),
        (2, lambda a: a[:, ::-1]),  # mirrored
    ],
)
def test_exif_orientation_gives_displayed_pixels(tmp_path, orientation, undo):
    shown = _pattern()
    stored = undo(shown)  # the pixels a camera would store for this tag
    img = Image.fromarray(np.ascontiguousarray(stored))
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(tmp_path / "o.png", exif=exif.tobytes())
    out = I.load_image(tmp_path / "o.png")
    assert out.shape == shown.shape
    assert np.array_equal(out, shown)


def test_greyscale_palette_and_cmyk_become_rgb(tmp_path):
    grey = np.tile(np.arange(W, dtype=np.uint8) * 6, (H, 1))
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    out = I.load_image(tmp_path / "g.png")
    assert out.shape == (H, W, 3) and np.array_equal(out[..., 0], grey)
    assert np.array_equal(out[..., 0], out[..., 2])

    Image.fromarray(_pattern()).quantize(colors=8).save(tmp_path / "p.gif")
    assert np.abs(I.load_image(tmp_path / "p.gif").astype(int) - _pattern()).max() <= 8

    Image.fromarray(_pattern()).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    out = I.load_image(tmp_path / "c.jpg")
    assert out.shape == (H, W, 3)
    assert out[4, 6, 0] > 200 and out[4, 6, 2] < 60  # red block still red
    assert out[18, 30, 2] > 200 and out[18, 30, 0] < 60


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    ramp = (np.tile(np.arange(W), (H, 1)) * 1600).astype(np.uint16)  # 0..62400
    Image.fromarray(ramp).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    out = I.load_image(tmp_path / "d.png")
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    assert np.array_equal(out[..., 1], expected)
    assert out[0, -1, 0] > 230 and out[0, 1, 0] < 10  # full range, not saturated


def test_transparency_composited_on_white(tmp_path):
    rgba = np.zeros((H, W, 4), np.uint8)  # black and fully transparent ...
    rgba[:, : W // 2] = (0, 200, 0, 255)  # ... except an opaque green left half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    out = I.load_image(tmp_path / "t.png")
    assert tuple(out[5, 2]) == (0, 200, 0)
    assert tuple(out[5, -2]) == (255, 255, 255)

    la = Image.fromarray(rgba, "RGBA").convert("LA")
    la.save(tmp_path / "la.png")
    assert tuple(I.load_image(tmp_path / "la.png")[5, -2]) == (255, 255, 255)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", I.EMPTY_FILE),
        (b"<html>404 not found</html>", I.NOT_AN_IMAGE),
    ],
)
def test_bad_bytes_are_rejected_with_reason(tmp_path, content, reason):
    (tmp_path / "x.jpg").write_bytes(content)
    with pytest.raises(I.ImageReject) as e:
        I.load_image(tmp_path / "x.jpg")
    assert e.value.reason == reason


def test_truncated_jpeg_is_rejected(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(tmp_path / "f.jpg")
    data = (tmp_path / "f.jpg").read_bytes()
    (tmp_path / "f.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(I.ImageReject) as e:
        I.load_image(tmp_path / "f.jpg")
    assert e.value.reason == I.TRUNCATED


def test_decompression_bomb_rejected_from_header(tmp_path):
    # 10000 x 10000 one-bit pixels: a few kB on disk, 100 M pixels when decoded.
    Image.new("1", (10_000, 10_000)).save(tmp_path / "bomb.png")
    assert os.path.getsize(tmp_path / "bomb.png") < 200_000
    with pytest.raises(I.ImageReject) as e:
        I.load_image(tmp_path / "bomb.png")
    assert e.value.reason == I.DECOMPRESSION_BOMB
    # the limit is a parameter: a small image passes a small limit, fails a smaller one
    Image.new("RGB", (10, 10)).save(tmp_path / "s.png")
    assert I.load_image(tmp_path / "s.png", max_pixels=100).shape == (10, 10, 3)
    with pytest.raises(I.ImageReject):
        I.load_image(tmp_path / "s.png", max_pixels=99)


def test_listing_is_sorted_skips_hidden_and_refuses_outside_symlinks(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    for p in (root / "b.jpg", root / "a.PNG", root / "sub" / "c.jpg", outside / "secret.jpg"):
        Image.new("RGB", (4, 4)).save(p, format="PNG")
    (root / ".hidden.jpg").write_bytes(b"x")
    (root / "notes.txt").write_text("not an image")
    os.symlink(outside / "secret.jpg", root / "leak.jpg")
    os.symlink(root / "b.jpg", root / "alias.jpg")  # inside the root: allowed
    os.symlink(outside, root / "linkdir")  # directory symlinks are never walked

    listing = I.list_images(root)
    assert listing.files == ["a.PNG", "alias.jpg", "b.jpg", "sub/c.jpg"]
    assert [(f, r) for f, r, _ in listing.rejects] == [("leak.jpg", I.SYMLINK_OUTSIDE_ROOT)]
    assert listing.ignored == 1


def test_non_image_is_rejected_even_after_ultralytics_patches_pil(tmp_path):
    """ultralytics wraps Image.open to pip-install pi-heif on unknown files; we must not."""
    from detectors.offline import go_offline

    go_offline()
    import ultralytics.utils.patches  # noqa: F401 (the import applies the patch)

    (tmp_path / "x.jpg").write_text("plain text")
    with pytest.raises(I.ImageReject) as e:
        I.load_image(tmp_path / "x.jpg")
    assert e.value.reason == I.NOT_AN_IMAGE and "pi_heif" not in e.value.detail
