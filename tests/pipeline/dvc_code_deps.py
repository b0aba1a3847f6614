"""The code each ``dvc.yaml`` stage runs, derived from imports, and a fixer for its deps.

DVC reruns a stage when one of its deps changes. A module a stage runs but does not list
lets an edit go unnoticed (a stale output is trusted); a listed module it never runs
reruns it for nothing (an edit to an evaluation helper retrains the adapters). Imports
change all the time, so the lists are derived, not kept by hand: a stage's command line
names a CLI command, ``pipeline.cli.COMMANDS`` names its module, and a static walk of
imports gives everything that command can execute.

The walk counts imports anywhere in a file (commands import their stage inside the
command function), ``from pkg import mod`` as importing the module, and every enclosing
package's ``__init__.py`` (Python runs it first). A non-Python file in a package counts
when a module in the walk names it in a string literal (``analysis/reference_coco.json``
is read through ``Path(__file__).with_name(...)``). A directory dep is right only when
every file in it is used: DVC hashes all of them.

    python -m tests.pipeline.dvc_code_deps           # print each stage's code deps
    python -m tests.pipeline.dvc_code_deps --write   # and rewrite them in dvc.yaml
"""

from __future__ import annotations

import ast
import contextlib
import re
import shlex
import sys
import tempfile
from collections.abc import Iterable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("analysis", "detectors", "pipeline", "trainer")
FIX = "python -m tests.pipeline.dvc_code_deps --write"


def is_code(dep: str) -> bool:
    parts = Path(dep).parts
    return bool(parts) and parts[0] in PACKAGES


def covers(dep: str, path: str) -> bool:
    """Whether a dep (a file or a directory) changes when ``path`` is edited."""
    dep = dep.rstrip("/")
    return path == dep or path.startswith(dep + "/")


@cache
def project_files(root: Path = ROOT) -> frozenset[str]:
    """Every file of the project packages that DVC would hash (it ignores caches)."""
    files = set()
    for package in PACKAGES:
        for p in (root / package).rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                files.add(p.relative_to(root).as_posix())
    return frozenset(files)


def module_file(name: str, root: Path = ROOT) -> str | None:
    """The project file that defines module ``name``, or None (not ours, or not a module)."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    for p in (base / "__init__.py", base.with_suffix(".py")):
        if p.is_file():
            return p.relative_to(root).as_posix()
    return None


def _imports(path: Path, name: str) -> tuple[set[str], set[str]]:
    """Module names a file imports (candidates; not all are modules) and its str literals."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names, strings = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.add(node.value)
    return names, strings


def closure(roots: Iterable[str], root: Path = ROOT) -> set[str]:
    """Project files (relative paths) that importing ``roots`` can execute or read."""
    data = [f for f in project_files(root) if not f.endswith(".py")]
    seen: set[str] = set()
    files: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # its packages
        rel = module_file(name, root)
        if rel is None:
            continue
        files.add(rel)
        names, strings = _imports(root / rel, name)
        todo.extend(names)
        folder = rel.rpartition("/")[0]
        files.update(
            f for f in data if f.rpartition("/")[0] == folder and f.rpartition("/")[2] in strings
        )
    return files


def command_name(cmd: str) -> str:
    """The CLI command a stage line runs: ``OMP_NUM_THREADS=2 groundset --quiet X ...`` -> X."""
    args = shlex.split(cmd)
    while args and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", args[0]):
        args.pop(0)
    if not args or args[0] != "groundset":
        raise ValueError(f"stage command does not call groundset: {cmd!r}")
    rest = [a for a in args[1:] if not a.startswith("-")]  # global options are flags
    if not rest:
        raise ValueError(f"no command in {cmd!r}")
    return rest[0]


def command_files(command: str) -> set[str]:
    """What ``groundset <command>`` can execute: the CLI, and the command's module."""
    from pipeline.cli import COMMANDS

    if command not in COMMANDS:
        raise ValueError(f"no such groundset command {command!r}")
    return closure(["pipeline.cli", f"pipeline.commands.{COMMANDS[command]}"])


def collapse(files: set[str], universe: frozenset[str]) -> list[str]:
    """The shortest sorted dep list for ``files``: a directory where all its files are used."""
    dirs = sorted({p for f in files for p in _parents(f)}, key=lambda d: d.count("/"))
    chosen: list[str] = []
    for d in dirs:
        if any(covers(c, d) for c in chosen):
            continue
        inside = {u for u in universe if covers(d, u)}
        if inside and inside <= files:
            chosen.append(d)
    rest = [f for f in files if not any(covers(c, f) for c in chosen)]
    return sorted(chosen + rest)


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def is_used(dep: str, files: set[str], universe: frozenset[str]) -> bool:
    """A code dep is right when everything it covers runs (an unknown path covers nothing)."""
    inside = {u for u in universe if covers(dep, u)}
    return bool(inside) and inside <= files


def diff(deps: list[str], files: set[str], universe: frozenset[str]) -> tuple[list[str], list[str]]:
    """(deps lines to add, code deps lines to remove) for a stage running ``files``."""
    code = [d for d in deps if is_code(d)]
    remove = [d for d in code if not is_used(d, files, universe)]
    kept = [d for d in code if d not in remove]
    missing = {f for f in files if not any(covers(d, f) for d in kept)}
    return collapse(missing, universe), remove


def report(stages: dict[str, tuple[list[str], set[str]]], universe: frozenset[str]) -> str:
    """Copy-paste fixes per ``dvc.yaml`` stage for {stage: (deps, files it runs)}; '' if none."""
    out, done = [], set()
    for name, (deps, files) in stages.items():
        key = name.split("@")[0]  # foreach instances share one deps list
        add, remove = diff(deps, files, universe)
        if key in done or not (add or remove):
            continue
        done.add(key)
        out.append(f"  stage {key}:")
        for word, lines in (("add", add), ("remove", remove)):
            if lines:
                out.append(f"    {word}:")
                out.extend(f"      - {line}" for line in lines)
    if not out:
        return ""
    return "\n".join([f"dvc.yaml code deps are out of date (or run: {FIX}):", *out])


def resolved(params_file: Path, workdir: Path) -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (command line, deps paths), as DVC's own parser resolves dvc.yaml."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    from tests.dvc_helpers import resolved_stages

    cmds = resolved_stages(params_file, workdir)
    with Repo(str(workdir)) as repo:
        deps = {
            s.addressing.split(":")[-1]: [
                d.def_path for d in s.deps if not isinstance(d, ParamsDependency)
            ]
            for s in repo.index.stages
        }
    return {name: (cmd, deps[name]) for name, cmd in cmds.items()}


def stage_files(stages: dict[str, tuple[str, list[str]]]) -> dict[str, tuple[list[str], set[str]]]:
    """{stage: (deps, files its command runs)} for the output of :func:`resolved`."""
    return {name: (deps, command_files(command_name(cmd))) for name, (cmd, deps) in stages.items()}


def rewrite(text: str, wanted: dict[str, list[str]]) -> str:
    """dvc.yaml with each stage's code deps replaced by ``wanted[stage]``, listed first.

    Line-based, so comments and layout survive; other deps keep their order after them.
    """
    lines = text.splitlines(keepends=True)
    out, todo, stage, in_stages, i = [], dict(wanted), None, False, 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if re.match(r"\S", line):
            in_stages, stage = line.startswith("stages:"), None
        elif in_stages and (m := re.match(r"  ([\w-]+):\s*(#.*)?$", line)):
            stage = m.group(1)
        elif stage in todo and (m := re.match(r"(\s+)deps:\s*$", line)):
            indent = m.group(1) + "  - "
            items = []
            while i < len(lines) and lines[i].startswith(indent):
                items.append(lines[i][len(indent) :].strip())
                i += 1
            keep = [x for x in items if not is_code(x)]
            out.extend(f"{indent}{x}\n" for x in [*todo.pop(stage), *keep])
    if todo:
        raise ValueError(f"no deps: block for stage(s) {sorted(todo)} in dvc.yaml; add one")
    return "".join(out)


def wanted_deps(params_file: Path = ROOT / "params.yaml") -> dict[str, list[str]]:
    """{dvc.yaml stage: the code deps it should list}."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        stages = stage_files(resolved(params_file, Path(tmp)))
    wanted: dict[str, set[str]] = {}
    for name, (_, files) in stages.items():
        wanted.setdefault(name.split("@")[0], set()).update(files)
    universe = project_files()
    return {key: collapse(files, universe) for key, files in wanted.items()}


def main(argv: list[str]) -> int:
    wanted = wanted_deps()
    for stage, deps in wanted.items():
        print(f"{stage}:")
        print("".join(f"  - {d}\n" for d in deps), end="")
    if "--write" in argv:
        path = ROOT / "dvc.yaml"
        before = path.read_text()
        after = rewrite(before, wanted)
        path.write_text(after)
        print("dvc.yaml: " + ("code deps rewritten" if after != before else "already right"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
