"""`groundset audit --pixels` (#12 item 4): composites whose boxes are too few to judge
are caught by their pixels, count as grid-like in the gate and are named."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFilter

from analysis.calibration import Layouts, to_records
from analysis.fit_weights import auroc
from analysis.pixel_audit import composites, score_files
from pipeline.core.dataset import n_boxes, write_dataset
from pipeline.stages.audit import run_audit

W, H = 96, 72


def _photo(seed):
    """A smooth random picture: blurred noise has no straight full-length edge."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (H // 8, W // 8, 3)).astype(np.uint8)
    im = Image.fromarray(base).resize((W, H), Image.BICUBIC)
    return im.filter(ImageFilter.GaussianBlur(2))


@pytest.fixture(scope="module")
def pixel_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("pixels")
    root = d / "images"
    root.mkdir()
    n_photo, n_comp = 40, 10
    files = []
    for k in range(n_photo):
        _photo(k).save(root / f"{k}.png")
        files.append(f"{k}.png")
    for c in range(n_comp):
        canvas = Image.new("RGB", (2 * W, 2 * H))
        for t in range(4):
            canvas.paste(_photo(1000 + 4 * c + t), ((t % 2) * W, (t // 2) * H))
        canvas.save(root / f"c{c}.png")
        files.append(f"c{c}.png")
    # two boxes per image: too few for the layout statistics to judge anything
    n = n_photo + n_comp
    x0 = np.tile([0.1, 0.6], n)
    lay = Layouts(np.arange(0, 2 * n + 1, 2), x0, x0.copy(), x0 + 0.2, x0 + 0.25, np.full(n, "x"))
    rec = to_records(lay, "web")
    rec = rec.set_column(rec.schema.get_field_index("file"), "file", pa.array(files))
    ds = d / "ds"
    write_dataset(ds, rec, None, stage="test", inputs=[], params={}, images_in=n,
                  boxes_in=n_boxes(rec), sources={"web": {"images_root": str(root)}})  # fmt: skip
    return d, ds, n_photo, n_comp


def test_without_pixels_nothing_can_be_judged(pixel_data):
    d, ds, _, _ = pixel_data
    result = run_audit(ds, d / "boxes-only")
    assert result["verdict"] == "pass"
    assert result["grid_share"]["overall"]["n_judged"] == 0


def test_with_pixels_composites_are_grid_like_named_and_blamed(pixel_data):
    d, ds, n_photo, n_comp = pixel_data
    out = d / "pixels"
    result = run_audit(ds, out, pixels=True)
    assert result["pixels"]["images_scored"] == n_photo + n_comp
    assert result["pixels"]["judged_by_pixels_only"] == n_photo + n_comp
    assert result["verdict"] == "fail" and result["failing_sources"] == ["web"]
    worst = {w["image_id"]: w for w in result["worst_images"]}
    comps = {f"web:{n_photo + c}" for c in range(n_comp)}
    assert set(worst) == comps  # every composite, and no photo
    assert {w["family"] for w in worst.values()} == {"pixels"}
    scores = pq.read_table(out / "pixel_scores.parquet").to_pydict()
    assert len(scores["image_id"]) == n_photo + n_comp
    page = (out / "report.html").read_text()
    assert "pixels" in json.dumps(result["grid_share"]["per_source"]["web"]["families"])
    assert f"{n_comp} of {n_comp} photos found" in page


def test_a_reference_directory_gets_the_same_pixel_pass(pixel_data):
    """Against itself the data must pass: the reference's share counts the images its
    pixels judged, as the audited data's does (with box scores only, the reference
    judged none of these two-box images, and the data failed against it)."""
    d, ds, n_photo, n_comp = pixel_data
    result = run_audit(ds, d / "self-ref", reference=ds, pixels=True)
    ref = result["reference"]
    assert ref["judged_by"] == "boxes and pixels"
    assert ref["n_judged"] == n_photo + n_comp
    assert ref["grid_share"] == pytest.approx(result["grid_share"]["overall"]["share"])
    assert result["verdict"] == "pass"
    boxes_only = run_audit(ds, d / "self-ref-boxes", reference=ds)
    assert boxes_only["reference"]["judged_by"] == "boxes"
    assert boxes_only["reference"]["n_judged"] == 0


def test_composites_of_real_photos_separate_from_the_photos(shared_data, tmp_path):
    """Goal AUROC >= 0.95 between 2x2/3x3 composites of real photos and the photos, on
    coco128 val (the weights were fitted on coco128 train), through the files' own
    decoding path (JPEG draft mode)."""
    files = sorted((shared_data / "coco128" / "images" / "val2017").glob("*.jpg"))
    photos = [Image.open(f).convert("RGB") for f in files]
    paths = []
    for k, im in enumerate(composites(photos, 60, seed=1)):
        paths.append(tmp_path / f"c{k}.jpg")
        im.save(paths[-1], quality=90)
    s_photo, s_comp = score_files(files), score_files(paths)
    assert np.isfinite(s_photo).all() and np.isfinite(s_comp).all()
    assert auroc(s_comp, s_photo) >= 0.95
