"""detectors/: the protocol, weights fingerprints, phrase maps and the offline ultralytics backend.

The backend tests build YOLOv8n from the ``yolov8n.yaml`` ultralytics ships (random
weights, no download); real-weights behaviour is tested in ``test_label_real.py``.
"""

import hashlib

import numpy as np
import pytest
from PIL import Image

from detectors.base import Detections, Detector, DetectorOptions, model_name
from detectors.phrases import check_known, load_phrase_map, to_phrases
from detectors.ultralytics_backend import UltralyticsDetector, resolve_weights
from pipeline.core.errors import UserError
from pipeline.core.hashing import fingerprint

# Random weights score ~1e-4, so plumbing tests keep everything above zero.
LOW = DetectorOptions(conf=1e-6, iou=0.7, max_det=5, imgsz=64)


@pytest.fixture(scope="module")
def tiny():
    return UltralyticsDetector("yolov8n.yaml", LOW)


def test_detections_validate_lengths():
    d = Detections(np.zeros((2, 4)), [0.5, 0.4], ["a", "b"])
    assert d.xyxy.dtype == np.float32 and len(d) == 2
    with pytest.raises(ValueError):
        Detections(np.zeros((2, 4)), [0.5], ["a", "b"])


def test_fingerprint_of_file_is_its_sha256_and_folder_is_order_free(tmp_path):
    f = tmp_path / "w.pt"
    f.write_bytes(b"weights")
    assert fingerprint(f) == hashlib.sha256(b"weights").hexdigest()
    a, b = tmp_path / "a_openvino_model", tmp_path / "b_openvino_model"
    for d, order in ((a, ("x.xml", "x.bin")), (b, ("x.bin", "x.xml"))):
        d.mkdir()
        for name in order:
            (d / name).write_bytes(name.encode())
    assert fingerprint(a) == fingerprint(b)
    (b / "x.bin").write_bytes(b"changed")
    assert fingerprint(a) != fingerprint(b)


def test_model_name_strips_export_suffixes():
    assert model_name("/m/yolov8n.pt") == "yolov8n"
    assert model_name("/m/yolov8n_int8_openvino_model") == "yolov8n_int8"
    assert model_name("best.onnx") == "best"


def test_missing_weights_is_a_user_error_that_says_where_to_get_them(tmp_path):
    for w in (tmp_path / "yolov8n.pt", "yolov8n.pt", "no_such_model.yaml"):
        with pytest.raises(UserError, match="ultralytics/assets/releases"):
            resolve_weights(w)
    assert resolve_weights("yolov8n.yaml")[1] == "yaml"


def test_corrupt_weights_is_a_user_error(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot load detector weights"):
        UltralyticsDetector(tmp_path / "bad.pt", LOW)


def test_a_folder_that_is_no_model_is_one_line_naming_the_formats(tmp_path, monkeypatch, capsys):
    """ultralytics loads some formats lazily: a plain folder failed only mid-run, with a
    63-line TypeError; it is now refused as the detector loads."""
    import sys

    from pipeline.cli import main

    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.png")
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(UserError, match=r"a \.pt file, an \.onnx"):
        UltralyticsDetector(tmp_path / "not_a_model", LOW)
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "groundset",
            "-q",
            "label",
            "--images",
            str(tmp_path / "images"),
            "--weights",
            str(tmp_path / "not_a_model"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "cannot load detector weights" in err[0]


def test_phrase_map_yaml_json_and_errors(tmp_path):
    (tmp_path / "m.yaml").write_text("person: a person\ntv:  a   television\n")
    m = load_phrase_map(tmp_path / "m.yaml")
    assert m == {"person": "a person", "tv": "a television"}
    (tmp_path / "m.json").write_text('{"dog": "a dog"}')
    assert load_phrase_map(tmp_path / "m.json") == {"dog": "a dog"}
    assert list(to_phrases(["tv", "cat", "tv"], m)) == ["a television", "cat", "a television"]
    check_known(m, ["person", "tv", "cat"])
    with pytest.raises(UserError, match="persn"):
        check_known({"persn": "x"}, ["person"])
    (tmp_path / "bad.yaml").write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="mapping"):
        load_phrase_map(tmp_path / "bad.yaml")
    with pytest.raises(UserError, match="does not exist"):
        load_phrase_map(tmp_path / "missing.yaml")


def test_backend_detects_a_batch_and_follows_the_protocol(tiny):
    assert isinstance(tiny, Detector)
    assert tiny.name == "yolov8n" and len(tiny.fingerprint) == 64
    rng = np.random.default_rng(0)
    ims = [
        rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
        rng.integers(0, 255, (80, 30, 3), dtype=np.uint8),
    ]
    out = tiny.detect(ims)
    assert len(out) == 2 and tiny.detect([]) == []
    for d, im in zip(out, ims):
        assert 0 < len(d) <= LOW.max_det
        assert set(d.class_names) <= set(tiny.names)
        h, w = im.shape[:2]
        assert (d.xyxy[:, [0, 2]] <= w + 1).all() and (d.xyxy[:, [1, 3]] <= h + 1).all()
        assert (np.diff(d.scores) <= 0).all()  # best first
    # random weights are seeded: a second build gives the same model and the same boxes
    again = UltralyticsDetector("yolov8n.yaml", LOW).detect(ims)
    assert np.array_equal(again[0].xyxy, out[0].xyxy)
    assert again[0].class_names == out[0].class_names


def test_classes_filter_by_name_and_unknown_names_fail(tiny):
    rng = np.random.default_rng(1)
    im = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    wide = UltralyticsDetector("yolov8n.yaml", DetectorOptions(1e-6, 0.7, 300, 64))
    seen = wide.detect([im])[0].class_names
    keep = sorted(set(seen))[:1]
    only = UltralyticsDetector(
        "yolov8n.yaml", DetectorOptions(1e-6, 0.7, 300, 64, classes=tuple(keep))
    )
    got = only.detect([im])[0].class_names
    assert got and set(got) == set(keep)
    with pytest.raises(UserError, match="unknown"):
        UltralyticsDetector("yolov8n.yaml", DetectorOptions(0.5, 0.7, 5, 64, classes=("unicorn",)))


def test_vocabulary_needs_world_weights_and_fails_cleanly_offline():
    with pytest.raises(UserError, match="YOLO-World"):
        UltralyticsDetector("yolov8n.yaml", DetectorOptions(0.5, 0.7, 5, 64, vocabulary=("dog",)))
    # A YOLO-World model builds offline, but embedding prompts needs CLIP, which is not
    # shipped: the error must be one clear UserError, not a hang or a download attempt.
    with pytest.raises(UserError, match="CLIP"):
        UltralyticsDetector(
            "yolov8s-worldv2.yaml", DetectorOptions(0.5, 0.7, 5, 64, vocabulary=("red car", "dog"))
        )


def test_pt_and_onnx_exports_of_one_model_give_the_same_boxes(tmp_path):
    """The backend loads any local ultralytics format; ONNX needs onnx + onnxruntime."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)
    YOLO("yolov8n.yaml").save(tmp_path / "tiny.pt")
    onnx = YOLO(str(tmp_path / "tiny.pt")).export(format="onnx", imgsz=64, simplify=False)
    opts = DetectorOptions(conf=1e-6, iou=0.7, max_det=5, imgsz=64)
    im = np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    a = UltralyticsDetector(tmp_path / "tiny.pt", opts)
    b = UltralyticsDetector(onnx, opts)
    assert b.name == "tiny" and b.fingerprint != a.fingerprint  # origin tells formats apart
    da, db = a.detect([im])[0], b.detect([im])[0]
    assert len(da) == len(db) > 0
    # the same float32 weights run by torch and by onnxruntime: different kernels and reduction
    # orders move boxes by ~1e-3 px; 0.5 px on a 64 px image still catches a wrong letterbox/scale,
    # and the sigmoid scores agree to 1e-3 relative (1e-7 absolute for the near-zero ones)
    np.testing.assert_allclose(db.xyxy, da.xyxy, atol=0.5)
    np.testing.assert_allclose(db.scores, da.scores, rtol=1e-3, atol=1e-7)
