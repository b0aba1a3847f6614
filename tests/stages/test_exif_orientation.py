"""Every stage that decodes pixels sees a phone photo as displayed (EXIF applied).

Boxes are stored in displayed orientation. A stage that decoded the stored pixels
instead would score, draw or export a sideways picture against upright boxes. The
photo here is stored rotated with EXIF orientation 6; displayed, it is 40 x 24 with a
red left half and a blue right half.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from detectors.base import Detections
from pipeline.core.dataset import read_dataset, write_dataset
from pipeline.core.images import load_image, read_rgb
from pipeline.core.records import assemble

W, H = 40, 24


def _displayed() -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[:, : W // 2] = (255, 0, 0)
    img[:, W // 2 :] = (0, 0, 255)
    return img


@pytest.fixture
def photo(tmp_path):
    stored = Image.fromarray(_displayed()).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed = stored rotated by 270 degrees
    path = tmp_path / "images" / "phone.jpg"
    path.parent.mkdir()
    stored.save(path, format="JPEG", quality=95, exif=exif)
    assert Image.open(path).size == (H, W)  # stored sideways
    return path


def _upright(rgb: np.ndarray) -> bool:
    """Red on the left, blue on the right (JPEG blurs the middle and the tones)."""
    h, w = rgb.shape[:2]
    left, right = rgb[:, : w // 4].reshape(-1, 3).mean(0), rgb[:, -w // 4 :].reshape(-1, 3).mean(0)
    return w > h and left[0] > 200 > left[2] + 100 and right[2] > 200 > right[0] + 100


def test_the_loader_applies_the_orientation(photo):
    assert _upright(load_image(photo)) and _upright(read_rgb(photo))


def test_evaluate_scores_the_displayed_picture(photo, tmp_path):
    from analysis.eval_score import score_dataset

    records = assemble(
        {
            "image_id": ["phone:1"],
            "source": ["phone"],
            "file": ["phone.jpg"],
            "width": [W],
            "height": [H],
            "captions": [["a photo"]],
        },
        {
            "image_index": [0],
            "phrase": ["thing"],
            "category": ["thing"],
            "x0": [0.1],
            "y0": [0.1],
            "x1": [0.4],
            "y1": [0.9],
            "score": [1.0],
            "origin": ["coco"],
        },
    )
    write_dataset(
        tmp_path / "ds",
        records,
        None,
        stage="test",
        inputs=[],
        params={},
        images_in=1,
        boxes_in=1,
        sources={"phone": {"images_root": str(photo.parent)}},
    )
    seen = []

    class Recorder:  # a detector that finds nothing and remembers what it was shown
        class_names = ("thing",)

        def detect(self, images):
            seen.extend(images)
            return [
                Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), [])
                for _ in images
            ]

    score_dataset(read_dataset(tmp_path / "ds"), Recorder())
    assert len(seen) == 1 and _upright(seen[0])


def test_denoise_gap_reads_the_displayed_picture(photo):
    from pipeline.stages.denoise_gap import _pixels

    x = _pixels([photo], 16)[0].numpy()  # (3, 16, 16) in [-1, 1], squashed to a square
    rgb = ((x.transpose(1, 2, 0) + 1) * 127.5).clip(0, 255)
    left, right = rgb[:, :4].reshape(-1, 3).mean(0), rgb[:, -4:].reshape(-1, 3).mean(0)
    assert left[0] > 200 > left[2] + 100 and right[2] > 200 > right[0] + 100


def test_report_thumbnails_are_upright(photo):
    from analysis.eval_report import draw_boxes

    png = draw_boxes(photo, np.zeros((0, 4)), [])
    assert _upright(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))


def test_gligen_tsv_stores_the_rotation_applied(photo):
    from pipeline.stages.export.gligen_tsv_parts import _jpeg_b64

    data = base64.b64decode(_jpeg_b64(photo))
    with Image.open(io.BytesIO(data)) as im:  # as GLIGEN's reader decodes: no EXIF step
        assert _upright(np.asarray(im.convert("RGB")))


def test_an_upright_jpeg_is_exported_byte_for_byte(tmp_path):
    from pipeline.stages.export.gligen_tsv_parts import _jpeg_b64

    path = tmp_path / "plain.jpg"
    Image.fromarray(_displayed()).save(path, format="JPEG", quality=90)
    assert base64.b64decode(_jpeg_b64(path)) == path.read_bytes()
