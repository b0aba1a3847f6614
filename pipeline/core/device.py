"""One meaning of ``--device`` for every command.

The torch stages (encode, sample, train's helpers) and the ultralytics stages (label,
detector train, evaluate's detector) used to default differently: one user command would
use the GPU and the next silently the CPU. Every command now takes the same spellings and
the same default, resolved here once.
"""

import re

from pipeline.core.errors import UserError

AUTO = "auto"
# cpu, mps, cuda, cuda:N, or ultralytics' bare GPU indices ("0", "0,1": DDP training).
_FORM = re.compile(r"^(cpu|mps|cuda(:\d+)?|\d+(,\d+)*)$")
HELP = (
    "auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda, cuda:N, "
    "or a GPU index such as 0."
)


def resolve_device(name: str) -> str:
    """Turn ``--device`` into a torch device string, checked against this machine.

    A bare index becomes ``cuda:N`` (torch does not read "0" as a device); several indices
    ("0,1") stay as they are, for ultralytics' multi-GPU training. Asking for a GPU on a
    machine without one is a clear error here rather than a CUDA traceback later.
    """
    name = str(name).strip().lower()
    if name != AUTO and not _FORM.match(name):
        raise UserError(f"--device {name!r} is not a device: use {HELP}")
    import torch

    has_cuda = torch.cuda.is_available()
    if name == AUTO:
        return "cuda" if has_cuda else "cpu"
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps asked for, but torch sees no Apple GPU here")
    if name.startswith("cuda") or name[0].isdigit():
        if not has_cuda:
            raise UserError(f"--device {name} asked for, but torch sees no CUDA GPU here")
        if name.isdigit():
            return f"cuda:{name}"
    return name
