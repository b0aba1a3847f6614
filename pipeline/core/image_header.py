"""Image sizes from file headers, in the orientation YOLO labels refer to.

Ingest needs only width and height, and decoding a million JPEGs to get them would cost
more than everything else together. PIL's ``Image.open`` reads the header lazily, so the
size costs a few hundred bytes of I/O. Ultralytics labels are drawn on the EXIF-rotated
(displayed) image, so, like ``ultralytics.data.utils.exif_size``, the size is swapped
when the EXIF orientation says the photo is stored sideways (tags 5-8).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from pipeline.core.defaults import MAX_IMAGE_PIXELS
from pipeline.core.images import CORRUPT, EMPTY_FILE, NOT_AN_IMAGE, UNREADABLE, ImageReject
from pipeline.core.limits import IMAGE_TOO_LARGE, too_large

ORIENTATION = 274  # the EXIF orientation tag
SIDEWAYS = {5, 6, 7, 8}  # transposed or rotated by 90/270 degrees


def header_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as displayed, without decoding pixels; ``ImageReject`` if unusable."""
    try:
        if os.path.getsize(path) == 0:
            raise ImageReject(EMPTY_FILE, "0 bytes")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # decompression-bomb warnings: no pixels decoded
            with Image.open(path) as im:
                w, h = im.size
                if orientation(im) in SIDEWAYS:
                    w, h = h, w
    except ImageReject:
        raise
    except Image.DecompressionBombError as e:  # PIL refuses over twice its pixel limit
        raise ImageReject(IMAGE_TOO_LARGE, str(e).splitlines()[0][:200]) from None
    except (UnidentifiedImageError, ImportError) as e:  # ImportError: ultralytics' patched open
        raise ImageReject(NOT_AN_IMAGE, str(e).splitlines()[0][:200]) from None
    except OSError as e:
        raise ImageReject(UNREADABLE, str(e).splitlines()[0][:200]) from None
    except (SyntaxError, ValueError, EOFError, IndexError) as e:
        raise ImageReject(CORRUPT, str(e).splitlines()[0][:200]) from None
    if w <= 0 or h <= 0:
        raise ImageReject(CORRUPT, f"header says {w}x{h}")
    if too_large(w, h):  # no stage could decode it (pipeline.core.images.load_image)
        raise ImageReject(IMAGE_TOO_LARGE, f"header says {w}x{h}, over {MAX_IMAGE_PIXELS} pixels")
    return int(w), int(h)


def orientation(im: Image.Image):
    """EXIF orientation, or None; a malformed EXIF block counts as no rotation (as ultralytics)."""
    try:
        exif = im.tag_v2 if im.format == "TIFF" else im.getexif()
        return exif.get(ORIENTATION)
    except Exception:  # noqa: BLE001 (any EXIF parse failure means "not rotated")
        return None
