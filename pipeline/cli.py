"""The ``groundset`` command line: one command module per command, loaded on demand.

A command's module (``pipeline/commands/<name>.py``) is imported only when that command
runs, and each imports its stage inside the command function. So ``groundset curate``
never imports torch, and the code a DVC stage runs is exactly its command's module and
what that imports (``tests/pipeline/test_dvc_deps.py`` checks ``dvc.yaml`` against it).
All user errors surface here as one stderr line and a documented exit code.
"""

import atexit
import errno
import importlib
import os
import sys
import threading

import click
import typer
from typer.core import TyperGroup

from pipeline.core.errors import UserError

ENVIRONMENT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}

# CLI name -> module under pipeline/commands/, in the order ``--help`` lists them.
COMMANDS = {
    "ingest": "ingest",
    "label": "label",
    "detector": "detector",
    "curate": "curate",
    "export": "export",
    "audit": "audit",
    "init-model": "init_model",
    "encode": "encode",
    "train": "train",
    "sample": "sample",
    "evaluate": "evaluate",
    "export-gligen": "export_gligen",
    "demo": "demo",
    "demo-model": "demo_model",
    "audit-plots": "audit_plots",
    "denoise-gap": "denoise_gap",
    "check-params": "check_params",
    "contaminate": "contaminate",
    "harm-score": "harm_score",
    "harm-plots": "harm_plots",
}


# Plain click help: rich markup would eat every "[default: ...]" written in a help text and
# label each flag "<bool>"; tracebacks are ours to turn into one line (see ``main``).
TYPER_SETTINGS = {
    "add_completion": False,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
}


class LazyCommands(TyperGroup):
    """A click group that imports a command's module only when the command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"pipeline.commands.{COMMANDS[name]}")
        holder = typer.Typer(**TYPER_SETTINGS)
        module.register(holder)
        holder.callback()(lambda: None)  # keeps a one-command holder a group
        return typer.main.get_command(holder).get_command(ctx, name)


app = typer.Typer(
    name="groundset",
    cls=LazyCommands,
    help=(
        "Build grounding data for GLIGEN (COCO ingest, YOLO pseudo-labels), audit box "
        "layouts for grid regularity before training, train gated adapters on a frozen "
        "diffusers UNet, and evaluate them.\n\nExit codes: 0 ok, 2 bad input, 3 audit gate failed. "
        "--version prints the version."
    ),
    no_args_is_help=True,
    **TYPER_SETTINGS,
)


@app.callback()
def _global(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars (for DVC logs)."),
) -> None:
    if quiet:
        os.environ["GROUNDSET_QUIET"] = "1"


GLOBAL_FLAGS = ("--quiet", "-q")


def _argv(args: list[str]) -> list[str]:
    """``--quiet`` may follow the command name too (``groundset curate ... -q``): move it
    to where the group option parser looks for it."""
    flags = [a for a in args if a in GLOBAL_FLAGS]
    return flags[:1] + [a for a in args if a not in GLOBAL_FLAGS] if flags else args


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("groundset")
    except PackageNotFoundError:  # a source tree without install metadata
        return "unknown"


def _clear_progress() -> None:
    """Erase any progress bar still on the terminal, so that an error starts a clean line.

    Only when tqdm was imported: no bar can be open otherwise, and importing it (0.05 to
    0.1 s) would slow every failing command, such as an audit whose gate says fail."""
    if "tqdm" not in sys.modules:
        return
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.leave = False
        bar.close()


def _fail(message: str, code: int) -> None:
    _clear_progress()
    print(f"groundset: error: {message}", file=sys.stderr)
    sys.exit(code)


def main() -> None:
    args = sys.argv[1:]
    if "--version" in args:
        print(f"groundset {_version()}")
        sys.exit(0)
    try:
        app(args=_argv(args), prog_name="groundset")
    except UserError as e:
        _fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        _clear_progress()
        print(
            "groundset: interrupted; outputs are written whole or not at all, so the previous "
            "--out is unchanged, and a rerun keeps the finished work (label and encode shards, "
            "sampled images, training checkpoints)",
            file=sys.stderr,
        )
        sys.exit(130)
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRORS:
            raise
        # a full disk, a read-only or forbidden location: the user's to fix, and the
        # previous output is intact because every output is built beside it first
        where = f" {e.filename}" if e.filename else ""
        _fail(f"cannot write{where}: {e.strerror}", 2)
    except MemoryError:
        _fail("out of memory; split the input into smaller datasets", 2)
    except RecursionError:  # the readers name their file; this is the net under them
        _fail("an input is nested too deeply to read (JSON or YAML thousands of levels deep)", 2)


def run() -> None:
    """The console script: ``main``, then, when the command left nothing running, an exit
    that skips the interpreter's teardown (freeing every module and array took 0.05 s of
    a 1.1 s audit). The command's outputs are closed by then; the exit handlers run and
    stdout and stderr are flushed first. A thread or child process still alive gets the
    normal exit, which waits for it."""
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    mp = sys.modules.get("multiprocessing")
    busy = threading.active_count() > 1 or (mp is not None and mp.active_children())
    if busy or not (code is None or isinstance(code, int)):
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: Python's own exit reports it
        sys.exit(code)
    os._exit(code or 0)


if __name__ == "__main__":
    run()
