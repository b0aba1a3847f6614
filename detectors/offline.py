"""Keep ultralytics off the network.

ultralytics probes DNS, pip-installs missing extras (CLIP for YOLO-World), fetches fonts
for plots and downloads ``yolo11n.pt`` for its AMP check. On a machine without internet
each of these either hangs on a timeout or fails late. groundset never downloads
anything implicitly, so every entry point calls :func:`go_offline` before importing
ultralytics. Users who want ultralytics' online behaviour can set the variables
themselves; ``setdefault`` leaves an explicit choice alone.
"""

import os

OFFLINE_ENV = {
    "YOLO_OFFLINE": "1",  # ultralytics.utils.ONLINE = False: no DNS probe, no downloads
    "YOLO_AUTOINSTALL": "False",  # never pip-install a missing extra at run time
}


def go_offline(verbose: bool = False) -> None:
    """Set the variables before ultralytics is first imported (it reads them at import)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    # Labelling shows one groundset progress bar instead of ultralytics' per-image logs;
    # training keeps ultralytics' epoch table.
    os.environ.setdefault("YOLO_VERBOSE", str(bool(verbose)))
