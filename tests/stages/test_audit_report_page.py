"""The audit report a user can act on (#12 item 7): the worst images as photos with their
boxes where the files exist, each source's own worst examples, files read only inside
their source's images root, and a page that draws in headless Chromium with every
image embedded and no network request."""

import base64
import io
import re
import shutil
import subprocess

import pytest
from PIL import Image, ImageDraw

from analysis.calibration import concat, lattice, synthetic_natural, to_records
from analysis.report_gallery import safe_path
from pipeline.core.dataset import n_boxes, write_dataset
from pipeline.stages.audit import run_audit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
W, H = 160, 120


def _photos(root, layouts, start=0):
    """One small JPEG per image, its boxes filled with colour (to_records names k.jpg)."""
    root.mkdir(parents=True, exist_ok=True)
    for k in range(layouts.n_images):
        im = Image.new("RGB", (W, H), (90, 120, 90))
        draw = ImageDraw.Draw(im)
        a, b = layouts.offsets[k], layouts.offsets[k + 1]
        for x0, y0, x1, y1 in zip(
            layouts.x0[a:b], layouts.y0[a:b], layouts.x1[a:b], layouts.y1[a:b]
        ):
            draw.rectangle([x0 * W, y0 * H, x1 * W, y1 * H], fill=(200, 60 + 20 * (k % 8), 40))
        im.save(root / f"{start + k}.jpg", quality=85)


def _dataset(path, parts: dict):
    """``parts``: source -> (layouts, images root or None); ids/files numbered apart."""
    import pyarrow as pa

    tables, sources, start = [], {}, 0
    for src, (lay, root) in parts.items():
        tables.append(to_records(lay, src, start=start))
        if root is not None:
            _photos(root, lay, start)
            sources[src] = {"images_root": str(root)}
        start += lay.n_images
    rec = pa.concat_tables(tables)
    write_dataset(
        path,
        rec,
        None,
        stage="test",
        inputs=[],
        params={},
        images_in=rec.num_rows,
        boxes_in=n_boxes(rec),
        sources=sources,
    )
    return path


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    grid = concat([synthetic_natural(40, 71), lattice(20, 72)])
    ds = _dataset(
        d / "ds",
        {
            "camera": (grid, d / "images" / "camera"),
            "scraped": (lattice(10, 73), None),  # no images root: layouts only
        },
    )
    run_audit(ds, d / "out")
    return d, (d / "out" / "report.html").read_text()


def _pngs(page):
    return re.findall(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def test_worst_images_show_photos_where_the_files_exist(audited):
    _, page = audited
    found = re.search(r"(\d+) of (\d+) photos found", page)
    assert found, "the worst-images section says how many photos it found"
    shown, total = map(int, found.groups())
    # 24 worst images: camera's lattices have their files, scraped's have none
    assert total == 24 and 0 < shown < total
    assert "image not available" not in page  # drawn in the PNG, not as page text


def test_every_source_gets_its_own_worst_examples(audited):
    _, page = audited
    section = page.split("Worst examples per source", 1)[1]
    assert "<h3>camera</h3>" in section and "<h3>scraped</h3>" in section
    # histogram + heatmaps + worst gallery + one gallery per source, all inline PNGs
    pngs = _pngs(page)
    assert len(pngs) == 5
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert not re.search(r"""(src|href)=["'](https?:|//|/|file:)""", page)


def test_readable_sizes(audited):
    _, page = audited
    sizes = [Image.open(io.BytesIO(base64.b64decode(p))).size for p in _pngs(page)]
    assert all(w >= 600 for w, _ in sizes), sizes  # drawn near the page's width, not thumbnails


def test_files_are_read_only_inside_their_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "in.jpg").write_bytes(b"x")
    (tmp_path / "secret.jpg").write_bytes(b"x")
    (root / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    assert safe_path(root, "in.jpg") == (root / "in.jpg").resolve()
    assert safe_path(root, "../secret.jpg") is None
    assert safe_path(root, str(tmp_path / "secret.jpg")) is None  # absolute: outside
    assert safe_path(root, "link.jpg") is None  # a symlink leading out of the root
    assert safe_path(root, "missing.jpg") is None and safe_path(None, "in.jpg") is None


# The page is checked as a browser sees it: a Content-Security-Policy that allows only
# data: images and inline style/script is put in front, so any request the page makes
# (image, stylesheet, font, fetch) is refused and reported; the script records how many
# images decoded and every refused or fetched URL on <body>.
PROBE = """<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:;
 style-src 'unsafe-inline'; script-src 'unsafe-inline'"><script>window.__v = [];
document.addEventListener('securitypolicyviolation', e => window.__v.push(e.blockedURI));
addEventListener('load', () => { const im = [...document.images], b = document.body;
 b.setAttribute('data-images', im.length);
 b.setAttribute('data-decoded', im.filter(i => i.complete && i.naturalWidth > 0).length);
 b.setAttribute('data-blocked', window.__v.join(' '));
 b.setAttribute('data-fetched', performance.getEntriesByType('resource').map(r => r.name).join(' '));
});</script>"""


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_the_page_draws_in_headless_chromium_with_no_network_request(audited, tmp_path):
    _, page = audited
    probe = tmp_path / "report.html"
    probe.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--proxy-server=127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    n = len(_pngs(page))
    assert attrs.get("images") == str(n) and attrs.get("decoded") == str(n), attrs
    assert attrs.get("blocked") == "" and attrs.get("fetched") == "", attrs


def test_a_missing_photo_reads_image_not_available_as_drawn_text(tmp_path):
    """The note pasted for a photo that is not found has the pixels that drawing the
    text there gives (it is drawn once per gallery and pasted)."""
    import numpy as np

    from analysis import report_gallery as g

    boxes = np.array([[0.1, 0.1, 0.4, 0.5]])
    entries = [g.Entry(0.9 - k / 10, f"img{k}", "s", f"{k}.jpg", boxes) for k in range(3)]
    img, shown = g.gallery(entries, {"s": str(tmp_path)})  # no file exists there
    assert shown == 0
    small = g.font(12)
    for k in range(3):
        ox = g.PAD + (k % 2) * (2 * g.CELL + g.PAD + 2 * g.PAD)
        oy = g.PAD + (k // 2) * (g.CELL + g.HEAD + g.PAD) + g.HEAD
        at = (ox + g.CELL + g.PAD + 8, oy + g.CELL // 2 - 8)
        want = Image.new("RGB", (g.CELL - 16, 24), "white")
        ImageDraw.Draw(want).text((0, 0), "image not available", fill=g.GREY, font=small)
        got = img.crop((at[0], at[1], at[0] + want.width, at[1] + want.height))
        assert list(got.getdata()) == list(want.getdata())
