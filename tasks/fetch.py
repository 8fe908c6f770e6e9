"""Fetch a file into a content-addressed cache: stream to a temp file, verify, rename.

    cache/blobs/<sha256>           verified content, never partial
    cache/index/<sha256(url)>.json the sha256 an unpinned URL served the first time (trust on first use)
    cache/tmp/*.part               bodies in flight; a killed run leaves one behind, the next ignores it

Errors are split in two: `TransientFetchError` (connection refused or dropped, timeouts, 5xx, a body
cut short) is worth retrying, and the Prefect task retries it; `FetchError` (404, a checksum
mismatch on a complete body) is final. Either names the URL.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks.atomic import write_json

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
Progress = Callable[[int, "int | None"], None]  # (bytes so far, expected total)


class FetchError(RuntimeError):
    """A download that will not succeed by trying again."""


class TransientFetchError(FetchError):
    """A download that may succeed if tried again."""


@dataclass(frozen=True)
class Source:
    """A file to fetch: `location` is a local path, a file:// URL or an http(s):// URL."""

    name: str
    location: str
    sha256: str | None = None
    size: int | None = None

    @property
    def is_remote(self) -> bool:
        return urllib.parse.urlsplit(self.location).scheme in ("http", "https")

    def local_path(self) -> Path:
        parts = urllib.parse.urlsplit(self.location)
        if parts.scheme == "file":
            return Path(urllib.request.url2pathname(parts.path))
        return Path(self.location)


def fetch(source: Source, cache: Path, *, timeout: float = 60.0,
          progress: Progress | None = None) -> Path:
    """The verified cached copy of `source`, fetched only if the cache lacks it."""
    cached = cached_path(source, cache)
    if cached is not None:
        logger.debug("%s: cached at %s", source.location, cached)
        return cached
    if source.is_remote:
        blob, sha = _download(source, cache, timeout, progress)
        write_json(cache / "index" / f"{_url_key(source.location)}.json", {"sha256": sha})
        return blob
    return _copy_local(source, cache)


def cached_path(source: Source, cache: Path) -> Path | None:
    """The cache entry for `source` if it is there (remote sources only: local files are re-hashed)."""
    sha = source.sha256
    if sha is None and source.is_remote:
        index = cache / "index" / f"{_url_key(source.location)}.json"
        sha = json.loads(index.read_text())["sha256"] if index.is_file() else None
    if sha is None or not source.is_remote:
        return None
    blob = cache / "blobs" / sha
    return blob if blob.is_file() else None


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _copy_local(source: Source, cache: Path) -> Path:
    path = source.local_path()
    if not path.is_file():
        raise FetchError(f"{source.location}: no such file")
    with open(path, "rb") as f:
        return _store(source, cache, lambda: iter(lambda: f.read(CHUNK), b""), None, None)


def _download(source: Source, cache: Path, timeout: float,
              progress: Progress | None) -> tuple[Path, str]:
    request = urllib.request.Request(source.location, headers={"User-Agent": "bertflow"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = response.length if response.length is not None else source.size
            blob = _store(source, cache, lambda: iter(lambda: response.read(CHUNK), b""),
                          total, progress)
    except urllib.error.HTTPError as err:
        kind = TransientFetchError if err.code in RETRYABLE_STATUS else FetchError
        raise kind(f"{source.location}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError,
            TimeoutError) as err:
        raise TransientFetchError(f"{source.location}: {type(err).__name__}: {err}") from err
    return blob, blob.name


def _store(source: Source, cache: Path, chunks: Callable, total: int | None,
           progress: Progress | None) -> Path:
    """Stream `chunks()` into cache/tmp, verify size and sha256, rename into cache/blobs."""
    tmp_dir = cache / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{Path(source.name).name}.", suffix=".part", dir=tmp_dir)
    try:
        digest, received = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks():
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if progress:
                    progress(received, total)
        _verify(source, received, total, digest.hexdigest())
        blob = cache / "blobs" / digest.hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_name, blob)
        return blob
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _verify(source: Source, received: int, total: int | None, sha: str) -> None:
    expected = source.size if source.size is not None else total
    if source.is_remote and expected is not None and received < expected:  # a retry may help
        raise TransientFetchError(f"{source.location}: body cut short: got {received} of "
                                  f"{expected} bytes")
    if source.size is not None and received != source.size:
        raise FetchError(f"{source.location}: size mismatch: expected {source.size} bytes, "
                         f"got {received}")
    if source.sha256 is not None and sha != source.sha256:
        raise FetchError(f"{source.location}: sha256 mismatch: expected {source.sha256}, "
                         f"got {sha}")


def remove_stale_parts(cache: Path, older_than_s: float = 24 * 3600) -> int:
    """Delete bodies left in cache/tmp by killed runs; recent ones may belong to a live run."""
    tmp_dir, removed = cache / "tmp", 0
    if tmp_dir.is_dir():
        for part in tmp_dir.glob("*.part"):
            if time.time() - part.stat().st_mtime > older_than_s:
                part.unlink(missing_ok=True)
                removed += 1
    return removed

