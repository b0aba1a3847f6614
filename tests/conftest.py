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
