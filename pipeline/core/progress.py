"""Progress bars that DVC logs can silence.

``GROUNDSET_QUIET=1`` (set by ``groundset --quiet``) turns every bar off, so
``dvc repro`` logs stay readable; otherwise long work shows a tqdm bar with a rate.
"""

import os


def quiet() -> bool:
    return os.environ.get("GROUNDSET_QUIET", "") not in ("", "0")


def progress(iterable=None, **kwargs):
    # tqdm is imported here, not at module level: it costs 0.05-0.1 s (its version
    # lookup reads package metadata), which a quiet, short command need not pay
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", quiet())
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
