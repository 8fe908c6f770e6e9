"""What a stage's output depends on, as hashes: the code it runs, the libraries that shape its
numbers, and the files it wrote.

    code_fingerprint("tasks.train")   the module and every project module it imports, transitively
                                      (imports inside functions too), by content; once per process
    library_versions(("keras",))      {"keras": "3.15.1"}
    stamp(path) / stale(stamps)       sha256 with size and mtime beside it: a file whose size and
                                      mtime are unchanged is not hashed again

No Prefect here: the cache policy (tasks/caching.py) and the stages' own folders use the same checks.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pydantic import BaseModel, ConfigDict


PROJECT_PACKAGES = ("bert_core", "data_contracts", "tasks")
SEAL = ".files.json"  # in a finished output folder: the stamps of every other file in it


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def imported_modules(source: str, module: str) -> set[str]:
    """Absolute names of the modules `source` (the text of `module`) imports, anywhere in it.

    >>> sorted(imported_modules("import os\\nfrom tasks.atomic import write_json\\n"
    ...                         "def f():\\n    from . import fetch", "tasks.train"))
    ['os', 'tasks', 'tasks.atomic', 'tasks.atomic.write_json', 'tasks.fetch']
    """
    names: set[str] = set()
    package = module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # may be submodules
    return names


ROOT = Path(__file__).resolve().parents[1]  # the folder holding the project packages


def _project_file(name: str) -> Path | None:
    """The source file of a project module, found without importing it (None for anything else,
    or for a name that is not a module, such as `tasks.atomic.write_json`)."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@cache
def _module(name: str) -> tuple[str, frozenset[str]] | None:
    """A project module's source sha256 and the modules it imports, read once per process and
    shared by every stage that reaches it (None for anything that is not a project module)."""
    path = _project_file(name)
    if path is None:
        return None
    source = path.read_bytes()
    return (hashlib.sha256(source).hexdigest(),
            frozenset(imported_modules(source.decode("utf-8"), name)))


@cache
def code_fingerprint(module: str) -> str:
    """sha256 over the sources of `module` and of every project module it reaches by import."""
    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or (found := _module(name)) is None:
            continue
        seen[name], imports = found
        todo.extend(imports)
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(f"{name}\0{seen[name]}\n".encode())
    return digest.hexdigest()


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each distribution ("absent" when it is not installed)."""
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


class FileStamp(BaseModel):
    """A file as a stage wrote it: its content hash, and the size and mtime that let a later check
    skip hashing it again."""

    model_config = ConfigDict(frozen=True)
    path: str
    sha256: str
    size: int
    mtime_ns: int


def stamp(path: str | os.PathLike) -> FileStamp:
    info = os.stat(path)
    return FileStamp(path=str(path), sha256=sha256_file(path), size=info.st_size,
                     mtime_ns=info.st_mtime_ns)


def stamp_folder(folder: str | os.PathLike) -> tuple[FileStamp, ...]:
    """Every file under `folder` (but its seal), in path order."""
    return tuple(stamp(p) for p in sorted(Path(folder).rglob("*"))
                 if p.is_file() and p.name != SEAL)


def seal(folder: Path) -> None:
    """Record the stamps of a finished folder in it (paths relative, so it may be renamed)."""
    stamps = [s.model_copy(update={"path": str(Path(s.path).relative_to(folder))}).model_dump()
              for s in stamp_folder(folder)]
    (folder / SEAL).write_text(json.dumps(stamps, indent=1) + "\n")


def sealed_files(folder: Path) -> tuple[FileStamp, ...]:
    """The stamps a sealed folder recorded, with absolute paths (empty when it has no seal)."""
    try:
        stamps = json.loads((folder / SEAL).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return ()
    return tuple(FileStamp(**{**s, "path": str(folder / s["path"])}) for s in stamps)


def unsealed(folder: Path) -> str | None:
    """Why `folder` cannot be reused as a finished output, or None when it can."""
    if not (folder / SEAL).is_file():
        return f"{folder} is missing or unfinished"
    return stale(sealed_files(folder))


def changed(recorded: FileStamp) -> str | None:
    """Why the file no longer is what was recorded, or None when it still is."""
    try:
        info = os.stat(recorded.path)
    except FileNotFoundError:
        return f"{recorded.path} is missing"
    if info.st_size == recorded.size and info.st_mtime_ns == recorded.mtime_ns:
        return None
    if info.st_size != recorded.size:
        return f"{recorded.path} changed size ({recorded.size} -> {info.st_size} bytes)"
    if sha256_file(recorded.path) != recorded.sha256:
        return f"{recorded.path} changed content (sha256 no longer {recorded.sha256[:12]}...)"
    return None


def stale(stamps: tuple[FileStamp, ...]) -> str | None:
    """The first recorded file that is missing or changed, or None when all are intact."""
    return next((reason for reason in map(changed, stamps) if reason), None)
