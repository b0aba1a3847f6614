"""The compiled kernels refuse to run as a build of another source, or when unbuilt."""

import sys

import pytest

from analysis import layout_kernels
from pipeline.core.errors import UserError


@pytest.fixture
def fresh_library():
    layout_kernels._library.cache_clear()
    yield
    layout_kernels._library.cache_clear()


def test_the_installed_build_matches_its_source(fresh_library):
    assert layout_kernels.SOURCE.is_file()  # a source checkout: the check applies
    layout_kernels._library()


def test_an_edited_source_with_the_old_build_is_refused(fresh_library, tmp_path, monkeypatch):
    edited = tmp_path / layout_kernels.SOURCE.name
    edited.write_bytes(layout_kernels.SOURCE.read_bytes() + b"/* edited */\n")
    monkeypatch.setattr(layout_kernels, "SOURCE", edited)
    with pytest.raises(UserError, match="built from another .*pip install -e"):
        layout_kernels._library()


def test_a_missing_build_says_how_to_build_it(fresh_library, monkeypatch):
    import analysis

    monkeypatch.setitem(sys.modules, "analysis._layout_kernels", None)  # import fails
    monkeypatch.delattr(analysis, "_layout_kernels", raising=False)  # as when never built
    with pytest.raises(UserError, match="not built: reinstall .*C compiler"):
        layout_kernels._library()
