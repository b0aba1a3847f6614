"""Shared test fixtures.

Real data lives in ``../shared/data`` beside the checkout; a user's fresh clone has no
such folder, so every test that needs it asks for ``shared_data`` and skips without it.

``tiny_model`` and ``tiny_pixel_model`` are the one tiny random diffusers model folder
(latent and pixel space, seed 0), written once per session; ``tiny_sdxl_model`` and
``tiny_sdxl_refiner`` are their SDXL counterparts. Tests only read them: a test
that writes into a model folder takes its own copy (``shutil.copytree``), and the session
fails at teardown if a shared folder changed.
"""

import hashlib
import os
from pathlib import Path

# DVC binds its log handlers to sys.stdout/sys.stderr when first imported. Imported here,
# under pytest's session-wide capture, so that no test's short-lived capsys streams (an
# in-process CLI call that imports dvclive) become DVC's, to be closed under later tests.
import dvc  # noqa: F401
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_addoption(parser):
    parser.addoption(
        "--torch-threads",
        type=int,
        default=None,
        help="run with this many torch/OpenMP threads (also GROUNDSET_TEST_THREADS): the "
        "suite must pass with 1 and with 2, since float reductions change with the count",
    )


def torch_threads(config) -> int | None:
    n = config.getoption("--torch-threads") or int(os.environ.get("GROUNDSET_TEST_THREADS") or 0)
    return n or None


def pytest_configure(config):
    n = torch_threads(config)
    if n:
        os.environ["OMP_NUM_THREADS"] = str(n)  # CLI subprocesses start with the same
        import torch

        torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_torch_thread(request):
    """Pin torch to one thread for a module of tiny-model tests (``--torch-threads N``
    overrides it, so those modules are run with 2 as well).

    Tiny UNets gain nothing from two threads, and on a shared 2-core machine (CI, or
    pytest beside dask workers) two fighting threads make a forward pass 20x slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads(request.config) or 1)
    yield
    torch.set_num_threads(before)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def _shared_model(tmp_path_factory, name: str, pixel: bool, arch: str = "sd1"):
    from trainer.tiny import write_tiny

    folder = write_tiny(tmp_path_factory.mktemp(name) / "model", seed=0, pixel=pixel, arch=arch)
    before = _digest(folder)
    yield folder
    assert _digest(folder) == before, f"a test wrote into the shared {name} folder {folder}"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny latent-space model folder (``write_tiny(path, seed=0)``); read-only."""
    yield from _shared_model(tmp_path_factory, "tiny_model", pixel=False)


@pytest.fixture(scope="session")
def tiny_pixel_model(tmp_path_factory) -> Path:
    """The tiny pixel-space model folder (``write_tiny(path, pixel=True)``); read-only."""
    yield from _shared_model(tmp_path_factory, "tiny_pixel_model", pixel=True)


@pytest.fixture(scope="session")
def tiny_sdxl_model(tmp_path_factory) -> Path:
    """The tiny SDXL model folder (``write_tiny(path, arch="sdxl")``); read-only."""
    yield from _shared_model(tmp_path_factory, "tiny_sdxl_model", pixel=False, arch="sdxl")


@pytest.fixture(scope="session")
def tiny_sdxl_refiner(tmp_path_factory) -> Path:
    """The tiny SDXL refiner folder (``write_tiny(path, arch="sdxl-refiner")``); read-only."""
    yield from _shared_model(
        tmp_path_factory, "tiny_sdxl_refiner", pixel=False, arch="sdxl-refiner"
    )
