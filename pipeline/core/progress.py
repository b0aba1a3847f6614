"""Progress bars that DVC logs can silence and short work never pays for.

``GROUNDSET_QUIET=1`` (set by ``groundset --quiet``) turns every bar off, so
``dvc repro`` logs stay readable; otherwise work that runs longer than
``PROGRESS_DELAY_S`` (or tqdm's own ``TQDM_DELAY`` variable, in seconds) shows a tqdm
bar with a rate.
"""

import os
import threading
import time

from pipeline.core.defaults import PROGRESS_DELAY_S


def quiet() -> bool:
    return os.environ.get("GROUNDSET_QUIET", "") not in ("", "0")


def progress(iterable=None, **kwargs):
    """A tqdm bar (same arguments), shown once the work has run ``PROGRESS_DELAY_S``."""
    kwargs.setdefault("disable", quiet())
    kwargs.setdefault("dynamic_ncols", True)
    return DeferredBar(iterable, kwargs)


def _delay() -> float:
    try:
        return max(0.0, float(os.environ.get("TQDM_DELAY", PROGRESS_DELAY_S)))
    except ValueError:
        return PROGRESS_DELAY_S


class DeferredBar:
    """Counts like a tqdm bar and becomes one (with the count so far) only when its work
    has run ``PROGRESS_DELAY_S``, or when asked for anything but counting. tqdm is
    imported then, not before: its import costs 0.04-0.1 s (its version lookup reads
    package metadata), which a short command, such as an audit of a quarter-million
    images in about a second, need not pay."""

    def __init__(self, iterable, kwargs: dict):
        self._iterable, self._kwargs = iterable, kwargs
        self._delay = _delay()
        self._bar, self._n, self._start = None, 0, time.monotonic()
        self._lock = threading.Lock()

    def _show(self):
        with self._lock:
            if self._bar is None:
                # autonotebook, not auto: the same bar (a widget in a notebook), without
                # the asyncio import tqdm.auto adds
                from tqdm.autonotebook import tqdm

                kw = dict(self._kwargs)
                if "total" not in kw and self._iterable is not None:
                    try:
                        kw["total"] = len(self._iterable)
                    except TypeError:  # an iterator: tqdm shows a count without a total
                        pass
                kw["initial"] = kw.get("initial", 0) + self._n
                kw["delay"] = 0  # waited here already
                self._bar = tqdm(**kw)
                if not self._bar.disable:  # a disabled bar (asked, or no terminal) has no clock
                    # elapsed time and rate from when the work began, not from now
                    self._bar.start_t -= time.monotonic() - self._start
        return self._bar

    def _count(self, n) -> None:
        if self._bar is not None:
            self._bar.update(n)
            return
        self._n += n
        due = time.monotonic() - self._start >= self._delay
        if due and not self._kwargs["disable"]:
            self._show()

    def __iter__(self):
        for item in self._iterable:
            yield item
            self._count(1)
        self.close()

    def update(self, n=1) -> None:
        self._count(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getattr__(self, name):  # set_postfix, write, n, ...: the real bar
        return getattr(self._show(), name)
