"""The baseline of ``bench/label.py``: the script a user writes instead of ``groundset label``.

A bare ultralytics loop, run as its own process: load the weights, list the image files,
``YOLO.predict(stream=True)`` with predict's defaults (the options ``groundset label``
uses by default: conf 0.25, iou 0.7, max_det 300, imgsz 640; one image per call, as
predict does for a list of files), and write one Parquet file of normalised boxes with
class names and scores. It does none of groundset's checks (EXIF, broken files, resume,
atomic writes, manifest), so it is the cost floor for the same detections.

    python bench/label_baseline.py IMAGES_DIR WEIGHTS OUT.parquet

The environment must keep ultralytics offline (``bench/label.py`` sets
``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=False``, ``YOLO_VERBOSE=False`` for both sides).
"""

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from ultralytics import YOLO

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def main() -> None:
    images, weights, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in SUFFIXES)
    model = YOLO(weights, task="detect")
    rows = []
    results = model.predict(
        [str(f) for f in files],
        stream=True,
        verbose=False,
        conf=0.25,
        iou=0.7,
        max_det=300,
        imgsz=640,
    )
    for f, r in zip(files, results):
        h, w = r.orig_shape
        xyxyn = r.boxes.xyxyn.tolist()
        classes = r.boxes.cls.int().tolist()
        scores = r.boxes.conf.tolist()
        boxes = [
            {"category": r.names[c], "x0": b[0], "y0": b[1], "x1": b[2], "y1": b[3], "score": s}
            for b, c, s in zip(xyxyn, classes, scores)
        ]
        rows.append({"file": str(f.relative_to(images)), "width": w, "height": h, "boxes": boxes})
    pq.write_table(pa.Table.from_pylist(rows), out)
    print(f"{len(rows)} images, {sum(len(r['boxes']) for r in rows)} boxes -> {out}")


if __name__ == "__main__":
    main()
