"""Safe extraction of checkpoint archives (Google's BERT releases are zip files).

Every member is checked before anything is written: no absolute paths, no `..`, no links, and the
declared total under a size bound; bytes are counted again while extracting, since headers can lie.
Extraction goes to a temporary folder renamed into place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from tasks.atomic import publish_dir

MAX_EXTRACTED_BYTES = 8 << 30  # BERT-Large with optimizer slots is ~4 GiB


class ArchiveError(ValueError):
    """An archive that is unsafe or not a BERT release; the message names the archive and member."""


def _check_member(archive: Path, info: zipfile.ZipInfo) -> None:
    name = info.filename
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"{archive}: member {name!r} has an absolute path")
    if ".." in path.parts or "\\" in name:
        raise ArchiveError(f"{archive}: member {name!r} escapes the extraction folder")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"{archive}: member {name!r} is a symbolic link")


def extract_zip(archive: Path, dest: Path, max_bytes: int = MAX_EXTRACTED_BYTES) -> Path:
    """Extract `archive` into `dest` (which must not exist yet) and return `dest`."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as err:
        raise ArchiveError(f"{archive}: not a zip archive: {err}") from err
    with zf:
        members = zf.infolist()
        for info in members:
            _check_member(archive, info)
        declared = sum(info.file_size for info in members)
        if declared > max_bytes:
            raise ArchiveError(f"{archive}: expands to {declared} bytes, over the bound of "
                               f"{max_bytes}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            written = 0
            for info in members:
                written = _extract_member(zf, info, tmp, archive, written, max_bytes)
            publish_dir(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, root: Path, archive: Path,
                    written: int, max_bytes: int) -> int:
    target = root.joinpath(*PurePosixPath(info.filename).parts)
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return written
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zf.open(info) as src, open(target, "wb") as out:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > max_bytes:
                    raise ArchiveError(f"{archive}: member {info.filename!r} takes the archive "
                                       f"past the bound of {max_bytes} bytes")
                out.write(chunk)
    except zipfile.BadZipFile as err:  # includes CRC mismatches of a corrupted member
        raise ArchiveError(f"{archive}: member {info.filename!r} is corrupt: {err}") from err
    return written

