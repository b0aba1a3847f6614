"""Deterministic, labelled layout sets for calibrating and testing the grid score.

Natural layouts come from real COCO boxes (``../shared/data``) or, when those are
absent, from a synthetic natural-like generator (clustered objects, heavy-tailed sizes,
perspective, clipping at the border, the odd genuinely regular crowd). Grid layouts come
in the families the audit must catch: jittered lattices with empty cells, shelf rows on
shared baselines with variable widths, boards (chess, parking, seating) and 2x2 / 3x3
mosaics of natural scenes rescaled into tiles. Every builder is vectorised (one NumPy
call per step, not per image) so the benchmark can make a million images, and is a pure
function of its seed.

Honest calibration uses two disjoint splits: A (the 80-image COCO subset + synthetic
seed A) for fitting, B (the 79-image subset + coco128 train + synthetic seed B) for
checking. Mosaics of split B are built from split B's natural scenes only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.segments import owner_index

NATURAL, LATTICE, ROWS, BOARD, MOSAIC = "natural", "lattice", "rows", "board", "mosaic"
MOSAIC_AUG = "mosaic_aug"  # ultralytics-style Mosaic augmentation (analysis.augment_mosaic)
GRID_KINDS = (LATTICE, ROWS, BOARD, MOSAIC, MOSAIC_AUG)
COCO_A = ["coco_instances_val2017_subsets/cocotiny_instances_val2017_80img.json"]
COCO_B = [
    "coco_instances_val2017_subsets/cocomini_instances_val2017_79img.json",
    "coco128/coco_json_train2017_first128/instances_train2017_first128.json",
]


@dataclass
class Layouts:
    """Flat normalised xyxy boxes of many images, delimited by ``offsets``."""

    offsets: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    kind: np.ndarray  # one label per image

    @property
    def n_images(self) -> int:
        return self.offsets.size - 1

    def arrays(self):
        return self.offsets, self.x0, self.y0, self.x1, self.y1

    def subset(self, mask: np.ndarray) -> Layouts:
        counts = np.diff(self.offsets)
        keep_box = np.repeat(mask, counts)
        offs = np.concatenate([[0], np.cumsum(counts[mask])])
        return Layouts(
            offs,
            self.x0[keep_box],
            self.y0[keep_box],
            self.x1[keep_box],
            self.y1[keep_box],
            self.kind[mask],
        )


def from_boxes(owner, x0, y0, x1, y1, n_images: int, kind: str, min_size=1e-3) -> Layouts:
    """Clip boxes to the image, drop degenerate ones, group by owner (stable)."""
    x0, y0 = np.clip(x0, 0, 1), np.clip(y0, 0, 1)
    x1, y1 = np.clip(x1, 0, 1), np.clip(y1, 0, 1)
    ok = (x1 - x0 > min_size) & (y1 - y0 > min_size)
    owner = owner[ok]
    order = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=n_images)
    offs = np.concatenate([[0], np.cumsum(counts)])

    def pick(a):
        return a[ok][order]

    return Layouts(offs, pick(x0), pick(y0), pick(x1), pick(y1), np.full(n_images, kind))


def concat(parts: list[Layouts]) -> Layouts:
    counts = np.concatenate([np.diff(p.offsets) for p in parts])
    return Layouts(
        np.concatenate([[0], np.cumsum(counts)]),
        *(np.concatenate([getattr(p, k) for p in parts]) for k in ("x0", "y0", "x1", "y1", "kind")),
    )


def _seg_arange(counts: np.ndarray) -> np.ndarray:
    """0..n-1 within each segment, for segments of the given lengths."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.arange(counts.sum()) - np.repeat(starts, counts)


# ---------------------------------------------------------------- natural layouts
def coco_aspects(path: str | Path, exclude: set = frozenset()) -> np.ndarray:
    """Width / height of each photo, in ``load_coco_layouts``' image order."""
    d = json.loads(Path(path).read_text())
    imgs = sorted((r for r in d["images"] if r["id"] not in exclude), key=lambda r: r["id"])
    return np.array([r["width"] / r["height"] for r in imgs], dtype=float)


def coco_image_ids(path: str | Path) -> set:
    return {r["id"] for r in json.loads(Path(path).read_text())["images"]}


def load_coco_layouts(path: str | Path, exclude: set = frozenset()) -> Layouts:
    """Real COCO boxes (xywh pixels, crowd skipped) as normalised layouts.

    ``exclude`` drops image ids (the val subsets share one image; split B leaves it out).
    """
    d = json.loads(Path(path).read_text())
    imgs = sorted((r for r in d["images"] if r["id"] not in exclude), key=lambda r: r["id"])
    index = {r["id"]: k for k, r in enumerate(imgs)}
    anns = [a for a in d["annotations"] if not a.get("iscrowd", 0) and a["image_id"] in index]
    owner = np.array([index[a["image_id"]] for a in anns], dtype=np.int64)
    b = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    wh = np.array([[r["width"], r["height"]] for r in imgs], dtype=np.float64)[owner]
    x0, y0 = b[:, 0] / wh[:, 0], b[:, 1] / wh[:, 1]
    return from_boxes(
        owner, x0, y0, x0 + b[:, 2] / wh[:, 0], y0 + b[:, 3] / wh[:, 1], len(imgs), NATURAL
    )


def synthetic_natural(n: int, seed: int, voc_like: float = 0.3) -> Layouts:
    """Natural-like layouts: clustered objects, heavy-tailed sizes, perspective.

    A share of images is VOC-like (few large objects); 8% hold a loose crowd row (people
    of similar size side by side), the genuinely regular natural case the gate tolerates.
    """
    rng = np.random.default_rng(seed)
    voc = rng.random(n) < voc_like
    k = np.where(voc, rng.integers(1, 7, n), np.minimum(rng.geometric(0.12, n), 40))
    owner = np.repeat(np.arange(n), k)
    m = owner.size
    n_cl = rng.integers(1, 4, n)
    cl = rng.integers(0, n_cl[owner])
    centres = rng.uniform(0.1, 0.9, (n, 3, 2))
    spread = rng.uniform(0.05, 0.3, n)[owner]
    cx = centres[owner, cl, 0] + rng.normal(0, 1, m) * spread
    cy = centres[owner, cl, 1] + rng.normal(0, 1, m) * spread * 0.7
    persp = rng.uniform(0, 1.5, n)[owner] * (rng.random(n) < 0.5)[owner]
    log_area = np.where(voc[owner], rng.uniform(-4.0, -0.5, m), rng.uniform(-8.0, -1.0, m))
    log_area += persp * (cy - 0.5) * 2
    ar = np.exp(rng.normal(0, 0.55, m))
    area = np.exp(log_area)
    w, h = np.sqrt(area * ar), np.sqrt(area / ar)
    crowd = (rng.random(n) < 0.08)[owner] & (k[owner] >= 4)
    if crowd.any():  # a loose row: similar sizes, noisy baseline, irregular gaps
        base_y = rng.uniform(0.5, 0.95, n)[owner]
        hh = rng.uniform(0.15, 0.5, n)[owner] * np.exp(rng.normal(0, 0.15, m))
        idx = _seg_arange(k)
        gap = rng.uniform(0.6, 1.6, m) * hh * 0.45
        xs = rng.uniform(0.0, 0.3, n)[owner] + idx * gap * 1.2 + rng.normal(0, 0.04, m)
        cx = np.where(crowd, xs, cx)
        h = np.where(crowd, hh, h)
        w = np.where(crowd, hh * rng.uniform(0.3, 0.6, m), w)
        cy = np.where(crowd, base_y - hh / 2 + rng.normal(0, 0.05, m) * hh, cy)
    return from_boxes(owner, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, n, NATURAL)


# ---------------------------------------------------------------- grid layouts
def lattice(n: int, seed: int, kind: str = LATTICE) -> Layouts:
    """r x c lattices with jitter, empty cells and a little size variation."""
    rng = np.random.default_rng(seed)
    r, c = rng.integers(2, 9, n), rng.integers(2, 9, n)
    gw, gh = rng.uniform(0.45, 0.98, n), rng.uniform(0.45, 0.98, n)
    ox, oy = rng.uniform(0, 1 - gw), rng.uniform(0, 1 - gh)
    sx, sy = gw / c, gh / r
    cells = r * c
    owner = np.repeat(np.arange(n), cells)
    idx = _seg_arange(cells)
    col, row = idx % c[owner], idx // c[owner]
    keep = rng.random(owner.size) >= rng.uniform(0, 0.35, n)[owner]
    jit = rng.uniform(0, 0.12, n)[owner]
    fill = rng.uniform(0.45, 0.9, n)[owner]
    ar = np.exp(rng.normal(0, 0.1, owner.size))
    cx = ox[owner] + (col + 0.5) * sx[owner] + rng.normal(0, 1, owner.size) * jit * sx[owner]
    cy = oy[owner] + (row + 0.5) * sy[owner] + rng.normal(0, 1, owner.size) * jit * sy[owner]
    w, h = fill * sx[owner] * ar, fill * sy[owner] / ar
    o, cx, cy, w, h = owner[keep], cx[keep], cy[keep], w[keep], h[keep]
    return from_boxes(o, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, n, kind)


def shelf_rows(n: int, seed: int, kind: str = ROWS) -> Layouts:
    """Retail shelves: rows of similar-height items on a shared baseline, variable widths."""
    rng = np.random.default_rng(seed)
    rows, per_row = rng.integers(2, 6, n), 14
    top, bottom = rng.uniform(0, 0.2, n), rng.uniform(0.8, 1.0, n)
    row_h = (bottom - top) / rows
    slots = rows * per_row
    owner = np.repeat(np.arange(n), slots)
    idx = _seg_arange(slots)
    row = idx // per_row
    rh = row_h[owner]
    fill = rng.uniform(0.55, 0.92, n * 6)[owner * 6 + row]  # per shelf
    h = rh * fill * np.exp(rng.normal(0, 0.06, owner.size))
    w = rh * fill * rng.uniform(0.2, 0.8, owner.size)
    gap = rh * rng.uniform(0.0, 0.12, owner.size)
    step = w + gap
    cum = np.cumsum(step)
    first = np.concatenate([[0], cum[:-1]])
    seg_start = np.repeat(first[::per_row], per_row)
    left = rng.uniform(0, 0.1, n * 6)[owner * 6 + row] + (first - seg_start)
    base = top[owner] + (row + 1) * rh - rh * 0.03 + rng.normal(0, 0.003, owner.size)
    keep = (left + w < 1.0) & (rng.random(owner.size) > 0.05)
    o = owner[keep]
    return from_boxes(o, left[keep], (base - h)[keep], (left + w)[keep], base[keep], n, kind)


def boards(n: int, seed: int, kind: str = BOARD) -> Layouts:
    """Chess boards, parking rows and seating plans: lattices with strong structure.

    Chess: 8x8 with 4-32 occupied squares, tall pieces standing on their square's
    baseline. Parking/seating: a few rows of identical slots, partly occupied, each row
    scaled by perspective.
    """
    rng = np.random.default_rng(seed)
    chess = rng.random(n) < 0.4
    r = np.where(chess, 8, rng.integers(1, 5, n))
    c = np.where(chess, 8, rng.integers(4, 13, n))
    cells = r * c
    owner = np.repeat(np.arange(n), cells)
    idx = _seg_arange(cells)
    col, row = idx % c[owner], idx // c[owner]
    occ = np.where(chess, rng.uniform(0.06, 0.5, n), rng.uniform(0.5, 1.0, n))
    keep = rng.random(owner.size) < occ[owner]
    side = rng.uniform(0.5, 0.95, n)
    ox, oy = rng.uniform(0, 1 - side), rng.uniform(0, 1 - side)
    persp = np.where(chess, 0.0, rng.uniform(0, 0.5, n))[owner]
    scale = 1 - persp * (1 - (row + 1) / r[owner])  # far rows (top) smaller
    sx, sy = side[owner] / c[owner], side[owner] / r[owner]
    cx = ox[owner] + 0.5 * side[owner] + (col + 0.5 - c[owner] / 2) * sx * scale
    cy = oy[owner] + (row + 0.5) * sy
    wf = np.where(chess[owner], rng.uniform(0.4, 0.7, owner.size), rng.uniform(0.7, 0.9, n)[owner])
    hf = np.where(chess[owner], rng.uniform(0.7, 1.4, owner.size), 0.8)
    w, h = wf * sx * scale, hf * np.minimum(sy, sx * 1.5) * scale
    y1 = cy + 0.4 * sy * np.where(chess[owner], 1.0, scale)
    o, cx, w, h, y1 = owner[keep], cx[keep], w[keep], h[keep], y1[keep]
    return from_boxes(o, cx - w / 2, y1 - h, cx + w / 2, y1, n, kind)


def mosaics(n: int, seed: int, scenes: Layouts, kind: str = MOSAIC) -> Layouts:
    """2x2 / 3x3 mosaics: each tile holds a natural scene's boxes rescaled into it.

    Half of the 2x2 mosaics use a random centre point, as in YOLO mosaic augmentation,
    and crop the scenes at the seams; the rest are equal tiles (collages).
    """
    rng = np.random.default_rng(seed)
    k = np.where(rng.random(n) < 0.6, 2, 3)
    tiles = k * k
    owner = np.repeat(np.arange(n), tiles)
    t = _seg_arange(tiles)
    tr, tc = t // k[owner], t % k[owner]
    centre = np.where(rng.random(n) < 0.5, rng.uniform(0.3, 0.7, n), 0.5)
    centre_y = np.where(centre != 0.5, rng.uniform(0.3, 0.7, n), 0.5)
    kk = k[owner].astype(float)
    tx0 = np.where(kk == 2, np.where(tc == 0, 0.0, centre[owner]), tc / kk)
    tx1 = np.where(kk == 2, np.where(tc == 0, centre[owner], 1.0), (tc + 1) / kk)
    ty0 = np.where(kk == 2, np.where(tr == 0, 0.0, centre_y[owner]), tr / kk)
    ty1 = np.where(kk == 2, np.where(tr == 0, centre_y[owner], 1.0), (tr + 1) / kk)
    # Random-centre tiles keep the scene's scale and are cropped; equal tiles stretch it.
    crop = (kk == 2) & (centre[owner] != 0.5)
    sw = np.where(crop, 0.5, tx1 - tx0)
    sh = np.where(crop, 0.5, ty1 - ty0)
    ax = np.where(tc == 0, tx1 - sw, tx0)  # crop anchors the scene at the centre point
    ay = np.where(tr == 0, ty1 - sh, ty0)
    ax, ay = np.where(crop, ax, tx0), np.where(crop, ay, ty0)
    scene = rng.integers(0, scenes.n_images, owner.size)
    cnt = np.diff(scenes.offsets)[scene]
    tile_of_box = np.repeat(np.arange(owner.size), cnt)
    src = scenes.offsets[:-1][scene][tile_of_box] + _seg_arange(cnt)
    tb = tile_of_box

    def place(v, a, s, lo, hi):
        return np.clip(a[tb] + v[src] * s[tb], lo[tb], hi[tb])

    bx0, bx1 = place(scenes.x0, ax, sw, tx0, tx1), place(scenes.x1, ax, sw, tx0, tx1)
    by0, by1 = place(scenes.y0, ay, sh, ty0, ty1), place(scenes.y1, ay, sh, ty0, ty1)
    area0 = (scenes.x1 - scenes.x0)[src] * (scenes.y1 - scenes.y0)[src] * sw[tb] * sh[tb]
    keep = (bx1 - bx0) * (by1 - by0) > 0.25 * area0  # YOLO drops mostly-cropped boxes
    return from_boxes(owner[tb][keep], bx0[keep], by0[keep], bx1[keep], by1[keep], n, kind)


# ---------------------------------------------------------------- splits
def _coco_files(split: str, shared_data: Path | None) -> list[tuple[Path, set]]:
    """The split's real COCO files present, each with the image ids it must leave out."""
    if shared_data is None:
        return []
    root = Path(shared_data)
    seen = set()
    if split == "B" and (root / COCO_A[0]).is_file():
        seen = coco_image_ids(root / COCO_A[0])
    return [
        (root / rel, seen) for rel in (COCO_A if split == "A" else COCO_B) if (root / rel).is_file()
    ]


def natural_split(split: str, shared_data: Path | None, n_synthetic: int = 1500) -> Layouts:
    """Natural layouts of a split: its real COCO files (when present) + synthetic ones."""
    seed = {"A": 11, "B": 22}[split]
    coco = [load_coco_layouts(path, exclude=seen) for path, seen in _coco_files(split, shared_data)]
    return concat([*coco, synthetic_natural(n_synthetic, seed)])


def natural_aspects(split: str, shared_data: Path | None, n_synthetic: int = 1500) -> np.ndarray:
    """Photo width / height of each image of ``natural_split`` (synthetic: drawn)."""
    from analysis.augment_mosaic import photo_aspects

    seed = {"A": 11, "B": 22}[split]
    coco = [coco_aspects(path, seen) for path, seen in _coco_files(split, shared_data)]
    return np.concatenate([*coco, photo_aspects(n_synthetic, seed + 1)])


def calibration_split(
    split: str, shared_data: Path | None = None, n_per_kind: int = 600, n_synthetic: int = 1500
) -> Layouts:
    """Natural + every grid kind for split ``A`` (fitting) or ``B`` (checking)."""
    from analysis.augment_mosaic import ultralytics_mosaics

    seed = {"A": 100, "B": 200}[split]
    nat = natural_split(split, shared_data, n_synthetic)
    aspects = natural_aspects(split, shared_data, n_synthetic)
    is_coco = np.arange(nat.n_images) < nat.n_images - n_synthetic
    coco = nat.subset(is_coco)
    scenes = coco if coco.n_images >= 50 else nat
    # mosaic augmentation: half from the split's real photos (when present), half from
    # synthetic natural scenes (30% VOC-like: few large objects per photo)
    half = n_per_kind // 2 if coco.n_images >= 50 else 0
    return concat(
        [
            nat,
            lattice(n_per_kind, seed + 1),
            shelf_rows(n_per_kind, seed + 2),
            boards(n_per_kind, seed + 3),
            mosaics(n_per_kind, seed + 4, scenes),
            ultralytics_mosaics(half, seed + 5, coco, aspects[is_coco], kind=MOSAIC_AUG),
            ultralytics_mosaics(
                n_per_kind - half,
                seed + 6,
                nat.subset(~is_coco),
                aspects[~is_coco],
                kind=MOSAIC_AUG,
            ),
        ]
    )


def owner_of(layouts: Layouts) -> np.ndarray:
    return owner_index(layouts.offsets)


def to_records(layouts: Layouts, source: str, start: int = 0):
    """Grounding records (``pipeline.core.records`` schema) for a set of layouts."""
    from pipeline.core.records import assemble

    n = layouts.n_images
    owner = owner_of(layouts)
    m = owner.size
    ids = [f"{source}:{k}" for k in range(start, start + n)]
    labels = np.repeat(layouts.kind, np.diff(layouts.offsets)).tolist()
    images = {
        "image_id": ids,
        "source": [source] * n,
        "file": [f"{k}.jpg" for k in range(start, start + n)],
        "width": np.full(n, 640),
        "height": np.full(n, 480),
        "captions": [[str(k)] for k in layouts.kind],
        "split": ["train"] * n,
    }
    boxes = {
        "image_index": owner,
        "phrase": labels,
        "category": labels,
        "x0": layouts.x0,
        "y0": layouts.y0,
        "x1": layouts.x1,
        "y1": layouts.y1,
        "score": np.ones(m, np.float32),
        "origin": ["calibration"] * m,
    }
    return assemble(images, boxes)
