"""Resumable work: a folder of finished pieces, keyed by the job that made them.

Labelling, encoding and sampling run for hours on real data. Each writes its pieces
(shards, images) atomically into a work folder that also records its job (inputs'
fingerprints and options). A rerun of the same job after a kill keeps every finished
piece and redoes only the rest; a different job never reuses a piece, so a resumed run
equals an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.atomic import atomic_write_text
from pipeline.core.errors import UserError
from pipeline.core.outputs import MARKER, remove_path

JOB_FILE = "job.json"


def open_job_dir(path: str | Path, job: dict, *, other_job: str = "restart") -> Path:
    """Make ``path`` the work folder of ``job``, keeping what an earlier run of it finished.

    A folder left by another job is cleared (``other_job="restart"``, for private work
    folders) or refused (``"refuse"``, where the folder is the user's output). Pieces a
    killed run was still writing (``.*.tmp-*``, see ``pipeline.core.atomic``) are removed.
    """
    path = Path(path)
    if path.exists() and _job_of(path) != job:
        others = [p for p in path.iterdir() if p.name != MARKER]  # the output's marker stays
        if others and other_job == "refuse":
            raise UserError(
                f"{path} holds the work of another job (other data, model or params); "
                "give a new --out or delete it"
            )
        for p in others:
            remove_path(p)
    path.mkdir(parents=True, exist_ok=True)
    for tmp in path.rglob(".*.tmp-*"):
        remove_path(tmp)
    if not (path / JOB_FILE).is_file():
        atomic_write_text(path / JOB_FILE, json.dumps(job, indent=2, sort_keys=True) + "\n")
    return path


def _job_of(path: Path) -> dict | None:
    try:
        return json.loads((path / JOB_FILE).read_text())
    except (OSError, ValueError):
        return None
