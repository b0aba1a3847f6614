"""Progress bars that DVC logs can silence.

``GROUNDSET_QUIET=1`` (set by ``groundset --quiet``) turns every bar off, so
``dvc repro`` logs stay readable; otherwise long work shows a tqdm bar with a rate.
"""

import os

from tqdm.auto import tqdm


def quiet() -> bool:
    return os.environ.get("GROUNDSET_QUIET", "") not in ("", "0")


def progress(iterable=None, **kwargs):
    kwargs.setdefault("disable", quiet())
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
