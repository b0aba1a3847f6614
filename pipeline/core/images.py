"""Image hygiene: find images under a root and decode them the way a viewer displays them.

Scraped image folders contain everything: phone photos whose pixels are stored sideways
with an EXIF rotation tag, greyscale scans, palette GIFs, CMYK print files, 16-bit PNGs,
transparent logos, zero-byte downloads, HTML error pages saved as ``.jpg`` and the odd
decompression bomb. A detector fed the raw pixels of a rotated photo returns boxes for
the wrong orientation, and one bad file must not stop a run over a million images. So
every image becomes an RGB uint8 array in *displayed* orientation, or a reject reason.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.core.defaults import MAX_IMAGE_PIXELS
from pipeline.core.errors import UserError

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".png",
        ".bmp",
        ".webp",
        ".tif",
        ".tiff",
        ".gif",
        ".jfif",
        ".pbm",
        ".pgm",
        ".ppm",
        ".dng",
        ".mpo",
    }
)

# Reject reasons (stable strings: they land in manifests).
EMPTY_FILE = "empty_file"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated_image"
CORRUPT = "corrupt_image"
DECOMPRESSION_BOMB = "decompression_bomb"
UNREADABLE = "unreadable_file"
SYMLINK_OUTSIDE_ROOT = "symlink_outside_root"

# Transparent pixels are composited onto white, as image viewers and browsers show them;
# the colour stored under alpha 0 is undefined and often black.
BACKGROUND = (255, 255, 255)


class ImageReject(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Listing:
    """Candidate image files under a root, in sorted (deterministic) order."""

    root: Path
    files: list[str]  # posix paths relative to root
    rejects: list[tuple[str, str, str]]  # (file, reason, detail) found while listing
    ignored: int  # files without an image extension


def list_images(root: str | Path) -> Listing:
    """Walk ``root`` without following directory symlinks; refuse file symlinks leaving it.

    Hidden files and directories (``.name``) are skipped; files whose extension is not an
    image extension are counted as ignored, not rejected, so a folder that also holds
    label ``.txt`` files or a README does not flood the rejects table.
    """
    root = Path(root)
    real_root = root.resolve()
    files, rejects, ignored = [], [], 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                ignored += 1
                continue
            rel = (rel_dir / name).as_posix()
            full = Path(dirpath) / name
            if full.is_symlink() and not full.resolve().is_relative_to(real_root):
                rejects.append((rel, SYMLINK_OUTSIDE_ROOT, f"points to {os.readlink(full)}"))
                continue
            files.append(rel)
    return Listing(root, sorted(files), sorted(rejects), ignored)


def load_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode ``path`` to an (H, W, 3) uint8 RGB array in displayed (EXIF-applied) orientation.

    Raises ``ImageReject`` with a stable reason for anything that is not a usable image.
    The pixel count is checked from the header, before any pixel is decoded, so a bomb
    costs nothing.
    """
    try:
        if os.path.getsize(path) == 0:
            raise ImageReject(EMPTY_FILE, "0 bytes")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _pil_open()(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageReject(DECOMPRESSION_BOMB, f"{w}x{h} exceeds {max_pixels} pixels")
                im.load()
                im = _exif_transpose(im)
                return to_rgb(im)
    except ImageReject:
        raise
    except (UnidentifiedImageError, ImportError) as e:
        raise ImageReject(NOT_AN_IMAGE, _first_line(e)) from None
    except Image.DecompressionBombError as e:
        raise ImageReject(DECOMPRESSION_BOMB, _first_line(e)) from None
    except PermissionError as e:
        raise ImageReject(UNREADABLE, _first_line(e)) from None
    except FileNotFoundError as e:
        raise ImageReject(UNREADABLE, _first_line(e)) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:
        msg = _first_line(e)
        raise ImageReject(TRUNCATED if "truncated" in msg.lower() else CORRUPT, msg) from None


def read_rgb(path: str | Path) -> np.ndarray:
    """``load_image`` for work that cannot skip a picture (scoring, the loss on held-out
    images): an unusable one is the user's error, reported as one line."""
    try:
        return load_image(path)
    except ImageReject as e:
        raise UserError(f"cannot read image {path}: {e}") from None


def _pil_open():
    """PIL's own ``Image.open``, even after ultralytics has monkey-patched it.

    Importing ultralytics replaces ``Image.open`` with a wrapper that, on an unidentified
    file, tries to pip-install ``pi-heif`` and then raises ``ModuleNotFoundError``; a
    non-image file must be a plain reject here, offline and without log noise.
    """
    opener = Image.open
    module = sys.modules.get(getattr(opener, "__module__", "") or "")
    return getattr(module, "_image_open", opener) if module is not Image else opener


def _exif_transpose(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block leaves the pixels as stored."""
    try:
        return ImageOps.exif_transpose(im)
    except (ValueError, TypeError, KeyError, SyntaxError, OSError):
        return im


def to_rgb(im: Image.Image) -> np.ndarray:
    """Convert any PIL mode to RGB uint8 without losing the image's appearance.

    PIL's own ``convert("RGB")`` clips 16-bit greyscale to 255 (most of a 16-bit image
    becomes white) and drops alpha, so those two cases are handled here.
    """
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_grey(im)
    has_alpha = (
        mode in ("RGBA", "LA", "PA", "RGBa", "La")
        or (mode == "P" and "transparency" in im.info)
        or (mode in ("L", "RGB") and "transparency" in im.info)
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        canvas.alpha_composite(rgba)
        return np.asarray(canvas.convert("RGB"), dtype=np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _high_depth_grey(im: Image.Image) -> np.ndarray:
    a = np.asarray(im)
    if im.mode == "F":
        a = a.astype(np.float64)
        scale = 1.0 if np.nanmax(a, initial=0.0) <= 1.0 else 1.0 / 255.0
        grey = np.clip(np.nan_to_num(a * scale), 0, 1) * 255.0
    else:  # 16-bit samples (stored as I;16* or widened to I): full range is 0..65535
        grey = np.clip(a.astype(np.float64), 0, 65535) / 257.0
    g = np.rint(grey).astype(np.uint8)
    return np.ascontiguousarray(np.stack([g, g, g], axis=-1))


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__
