"""Shared test fixtures.

Real data lives in ``../shared/data`` beside the checkout; a user's fresh clone has no
such folder, so every test that needs it asks for ``shared_data`` and skips without it.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """Pin torch to one thread for a module of tiny-model tests.

    Tiny UNets gain nothing from two threads, and on a shared 2-core machine (CI, or
    pytest beside dask workers) two fighting threads make a forward pass 20x slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
