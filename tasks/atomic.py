"""Writes that are all or nothing: a temp file or folder beside the target, then a rename."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.fingerprint import seal, unsealed


def publish_dir(tmp: Path, dest: Path, replace: bool = False) -> None:
    """Seal a finished folder (the stamps of its files, tasks/fingerprint.py) and rename it into
    place. If `dest` exists: an intact (sealed) one that a
    concurrent run got there first with is kept, as both came from the same content-addressed
    inputs, unless `replace`; a damaged or unfinished one is swapped out and deleted."""
    seal(tmp)
    try:
        os.replace(tmp, dest)
        return
    except OSError:
        if not dest.is_dir():
            raise
    if not replace and unsealed(dest) is None:
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
    os.replace(dest, trash / dest.name)
    os.replace(tmp, dest)
    shutil.rmtree(trash, ignore_errors=True)


def publish_built(build: Callable[[Path], object], out: Path) -> None:
    """`build(tmp)` fills a temporary folder beside `out`, which is then sealed and renamed into
    place (`publish_dir`); the temporary folder never outlives the call."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        build(tmp)
        publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(path: Path, value) -> Path:
    return write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def copy_file(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


@contextmanager
def exclusive(lock_file: Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created if missing) for the block; another process
    asking for the same lock waits until it is released (or the holder dies)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait(f"waiting for another process holding {lock_file}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
