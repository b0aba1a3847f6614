"""Sanity row: real photos scored against their own boxes, as if they had been generated.

If the YOLO score is computed right, it must reproduce the detector's own accuracy on the
set (``yolo val`` measures mAP50 0.59 on coco128 val2017 with the shared YOLOv8n INT8
weights at conf 0.001), and real photos must show little grid effect. The figures are
the "real images" row of docs/evaluation.md.
"""

import json

import pytest


@pytest.fixture(scope="module")
def coco128_val(shared_data, tmp_path_factory):
    from pipeline.stages.ingest.yolo import ingest_yolo

    root = shared_data / "coco128"
    weights = shared_data / "yolov8n_int8_openvino" / "yolov8n_int8_openvino_model"
    if not (root / "images" / "val2017").is_dir() or not weights.is_dir():
        pytest.skip("coco128 val2017 or the shared YOLOv8n weights are not present")
    out = tmp_path_factory.mktemp("real") / "coco128_val"
    ingest_yolo(
        root / "images" / "val2017",
        root / "object_detection" / "labels" / "val2017",
        root / "object_detection" / "config.yaml",
        out,
        source="coco128-val",
    )
    return out, weights


@pytest.mark.slow
def test_real_images_reproduce_detector_accuracy_and_show_no_grid(coco128_val, tmp_path):
    from detectors.base import DetectorOptions
    from detectors.ultralytics_backend import UltralyticsDetector
    from pipeline.stages.evaluate import REAL, evaluate

    layouts, weights = coco128_val
    det = UltralyticsDetector(weights, DetectorOptions(conf=0.001, iou=0.7, max_det=300, imgsz=640))
    metrics = evaluate(layouts, tmp_path / "out", det, real=True, batch_size=16, report_samples=4)
    row = metrics["runs"][REAL]
    print(json.dumps(row, indent=1))  # the README's "real images" row (pytest -s shows it)
    assert row["n_images"] == 128 and row["n_requested"] == 898 and row["n_unscorable"] == 0
    # COCOeval's 101-point AP50 on these images; ultralytics' own val reports 0.59.
    assert 0.55 <= row["ap50"] <= 0.65
    assert row["ap75"] < row["ap50"] and row["ap"] < row["ap75"]
    # Little grid effect in real photos, by both measures.
    assert row["tiling_score"] < 0.15 and row["tiling_share"] < 0.1
    assert row["grid_score"] < 0.3 and row["grid_share"] < 0.1
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000
