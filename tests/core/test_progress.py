"""Progress bars appear once work has run PROGRESS_DELAY_S (or TQDM_DELAY), with the
count so far, and short work never creates one."""

import io
import time

from pipeline.core import progress as progress_mod
from pipeline.core.progress import progress


def test_short_work_creates_no_bar_and_yields_every_item(monkeypatch):
    monkeypatch.delenv("TQDM_DELAY", raising=False)
    monkeypatch.delenv("GROUNDSET_QUIET", raising=False)
    bar = progress(range(1000), desc="fast")
    assert list(bar) == list(range(1000))
    assert bar._bar is None  # the delay (0.5 s) was never reached


def test_a_bar_appears_after_the_delay_with_the_count_so_far(monkeypatch):
    monkeypatch.setenv("TQDM_DELAY", "0.05")
    monkeypatch.delenv("GROUNDSET_QUIET", raising=False)
    out = io.StringIO()
    bar = progress(range(6), desc="slow", file=out)
    seen = []
    for i in bar:
        seen.append(i)
        if i == 2:
            assert bar._bar is None  # not yet: 0.05 s have not passed
            time.sleep(0.06)
    assert seen == list(range(6))
    assert bar._bar is not None and bar._bar.n == 6 and bar._bar.total == 6
    assert "slow" in out.getvalue() and "6/6" in out.getvalue()
    # elapsed time counts from when the work began, not from when the bar appeared
    assert bar._bar.format_dict["elapsed"] >= 0.06


def test_manual_updates_count_before_and_after_the_bar_appears(monkeypatch):
    monkeypatch.setenv("TQDM_DELAY", "0")
    monkeypatch.delenv("GROUNDSET_QUIET", raising=False)
    out = io.StringIO()
    with progress(total=10, initial=2, desc="manual", file=out) as bar:
        bar.update(3)  # delay 0: the bar appears here, counting 2 + 3
        bar.update(4)
        assert bar.n == 9  # any attribute is the real bar's
    assert "9/10" in out.getvalue()


def test_quiet_never_shows_a_bar(monkeypatch):
    monkeypatch.setenv("TQDM_DELAY", "0")
    monkeypatch.setenv("GROUNDSET_QUIET", "1")
    bar = progress(range(50))
    assert sum(bar) == sum(range(50)) and bar._bar is None
    # what a training loop asks of its bar works on a quiet one too, and draws nothing
    err = io.StringIO()
    with progress(total=3, file=err) as manual:
        manual.update(1)
        manual.set_postfix(loss="0.1")
        manual.update(2)
    assert err.getvalue() == ""
    # disable=None: tqdm decides, and turns itself off where its file is no terminal
    monkeypatch.delenv("GROUNDSET_QUIET")
    with progress(total=3, disable=None, file=err) as auto:
        auto.set_postfix(loss="0.1")
        auto.update(3)
    assert err.getvalue() == ""


def test_a_bad_delay_falls_back_to_the_default(monkeypatch):
    monkeypatch.setenv("TQDM_DELAY", "soon")
    assert progress_mod._delay() == progress_mod.PROGRESS_DELAY_S
