"""The embedded demo world: four folders of rendered scenes that exercise every input path.

``make_demo(out, ...)`` writes
```
out/natural/    images/ + annotations/instances_demo.json + captions_demo.json  (COCO)
out/grid/       the same layout; lattices and 2x2/3x3 mosaics (the audit must flag it)
out/unlabelled/ images/ + captions.jsonl (sidecar for ``groundset label``) +
                truth/instances_unlabelled.json (true boxes, kept aside for checking)
out/heldout/    COCO layout; natural scenes never trained on, for evaluation
out/demo.json   parameters and counts;  out/SHA256SUMS  every file's hash
```
The COCO files use the real COCO 2017 layout (info, licenses, images with license/
coco_url/flickr_url/date_captured, annotations with polygon segmentation, area,
iscrowd, bbox xywh, categories with supercategory), so ``groundset ingest coco`` reads
the demo through the same code path as the real dataset.

Each part draws from its own seeded stream, so changing one part's size leaves the
other parts' bytes unchanged.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.core.atomic import atomic_output_dir
from pipeline.core.errors import UserError
from pipeline.core.hashing import sha256_file
from pipeline.core.outputs import claim_output
from pipeline.core.progress import progress
from pipeline.stages.demo.render import (
    VOCABULARY,
    lattice_scene,
    mosaic_scene,
    natural_scene,
    outline,
    png_bytes,
    polygon_area,
    render,
)

PARTS = ("natural", "grid", "unlabelled", "heldout")
SUPERCATEGORY = "shape"
LICENSE = {"url": "https://www.apache.org/licenses/LICENSE-2.0", "id": 1, "name": "Apache-2.0"}
DATE = "2026-01-01 00:00:00"  # fixed, so files do not depend on when they were made
NUMBERS = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("{}", "a picture of {}", "{} on a grey background")


def caption_list(categories) -> str:
    """GLIGEN detection-data style: 'a red circle, two blue squares and a yellow star'."""
    counts = Counter(int(c) for c in categories)
    parts = []
    for cat, k in counts.items():  # first-appearance order, deterministic
        name = VOCABULARY[cat][0]
        parts.append(f"{NUMBERS[min(k, 9)]} {name}{'s' if k > 1 else ''}")
    if not parts:
        return "an empty grey picture"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def captions_for(categories) -> list[str]:
    listed = caption_list(categories)
    return [t.format(listed) for t in TEMPLATES]


def _scenes(part: str, n: int, size: int, seed: int):
    rng = np.random.default_rng([seed, PARTS.index(part)])
    for i in range(n):
        if part == "grid":
            yield (lattice_scene if i % 2 == 0 else mosaic_scene)(rng, size)
        else:
            yield natural_scene(rng, size)


def _coco_docs(part: str, scenes: list, size: int) -> tuple[dict, dict]:
    """The instances and captions documents of one part, in COCO 2017's layout."""
    info = {
        "description": f"groundset demo world, part {part}",
        "url": "",
        "version": "1.0",
        "year": 2026,
        "contributor": "groundset",
        "date_created": DATE.split()[0].replace("-", "/"),
    }
    images, annotations, captions = [], [], []
    ann_id = cap_id = 0
    for i, scene in enumerate(scenes, start=1):
        file_name = f"{i:012d}.png"
        images.append(
            {
                "license": 1,
                "file_name": file_name,
                "coco_url": "",
                "height": size,
                "width": size,
                "date_captured": DATE,
                "flickr_url": "",
                "id": i,
            }
        )
        for box, cat in zip(scene.boxes, scene.categories):
            ann_id += 1
            poly = outline(int(cat), box)
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append(
                {
                    "segmentation": [[round(float(v), 2) for v in poly.ravel()]],
                    "area": round(polygon_area(poly), 2),
                    "iscrowd": 0,
                    "image_id": i,
                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    "category_id": int(cat) + 1,
                    "id": ann_id,
                }
            )
        for text in captions_for(scene.categories):
            cap_id += 1
            captions.append({"image_id": i, "id": cap_id, "caption": text})
    categories = [
        {"supercategory": SUPERCATEGORY, "id": k + 1, "name": name}
        for k, (name, _) in enumerate(VOCABULARY)
    ]
    base = {"info": info, "licenses": [LICENSE], "images": images}
    instances = {**base, "annotations": annotations, "categories": categories}
    return instances, {**base, "annotations": captions}


def _dump(path: Path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, separators=(",", ":")))


def _write_part(root: Path, part: str, n: int, size: int, seed: int, bar) -> dict:
    scenes = list(_scenes(part, n, size, seed))
    images = root / part / "images"
    images.mkdir(parents=True)
    for i, scene in enumerate(scenes, start=1):
        (images / f"{i:012d}.png").write_bytes(png_bytes(render(scene, size)))
        bar.update(1)
    instances, captions = _coco_docs(part, scenes, size)
    if part == "unlabelled":
        # The detector path sees only pixels and a caption sidecar; truth stays aside.
        _dump(root / part / "truth" / "instances_unlabelled.json", instances)
        lines = [
            json.dumps({"file": im["file_name"], "caption": c["caption"]})
            for im, c in zip(instances["images"], captions["annotations"][:: len(TEMPLATES)])
        ]
        (root / part / "captions.jsonl").write_text("".join(f"{line}\n" for line in lines))
    else:
        _dump(root / part / "annotations" / f"instances_{part}.json", instances)
        _dump(root / part / "annotations" / f"captions_{part}.json", captions)
    return {"images": n, "boxes": len(instances["annotations"])}


def _hash_tree(root: Path) -> str:
    lines = []
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        lines.append(f"{sha256_file(p)}  {p.relative_to(root)}\n")
    return "".join(lines)


def make_demo(
    out: str | Path,
    *,
    n_natural: int,
    n_unlabelled: int,
    n_grid: int,
    n_heldout: int,
    size: int,
    seed: int,
    overwrite: bool = False,
) -> dict:
    """Render the demo world into ``out`` (atomically) and return its summary."""
    counts = {
        "natural": n_natural,
        "grid": n_grid,
        "unlabelled": n_unlabelled,
        "heldout": n_heldout,
    }
    if any(v < 0 for v in counts.values()):
        raise UserError(f"demo part sizes must be >= 0, got {counts}")
    if size < 16:
        raise UserError(f"--size must be at least 16 pixels, got {size}")
    with claim_output(out, kind="demo", overwrite=overwrite):
        out = Path(out)
        with atomic_output_dir(out, kind="demo") as tmp:
            summary = {"params": {**counts, "size": size, "seed": seed}, "parts": {}}
            with progress(total=sum(counts.values()), desc="demo", unit="img") as bar:
                for part in PARTS:
                    summary["parts"][part] = _write_part(tmp, part, counts[part], size, seed, bar)
            summary["vocabulary"] = [name for name, _ in VOCABULARY]
            (tmp / "demo.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
            (tmp / "SHA256SUMS").write_text(_hash_tree(tmp))
        return summary
