"""Fetching into the content-addressed cache, against a loopback server with injected faults."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from tasks.fetch import FetchError, Source, TransientFetchError, fetch, remove_stale_parts

DATA = bytes(range(256)) * 64  # 16 KiB
SHA = hashlib.sha256(DATA).hexdigest()


def pinned(url: str) -> Source:
    return Source("data.bin", url, SHA, len(DATA))


def cache_files(cache):
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


def test_second_fetch_is_served_from_cache(loopback, tmp_path):
    url = loopback.add("/data.bin", DATA)
    blob = fetch(pinned(url), tmp_path)
    assert blob.read_bytes() == DATA and blob.name == SHA
    assert fetch(pinned(url), tmp_path) == blob
    assert loopback.requests == ["/data.bin"]


def test_unpinned_url_is_trusted_on_first_use_then_cached(loopback, tmp_path):
    url = loopback.add("/data.bin", DATA)
    blob = fetch(Source("data.bin", url), tmp_path)
    assert fetch(Source("data.bin", url), tmp_path) == blob
    assert loopback.requests == ["/data.bin"]


@pytest.mark.parametrize("fault,message", [
    ("500", "HTTP 500"),
    ("drop", "IncompleteRead|body cut short"),
    ("truncate", f"body cut short: got {len(DATA) // 2} of {len(DATA)} bytes"),
])
def test_transient_faults_are_retryable_and_leave_nothing(loopback, tmp_path, fault, message):
    url = loopback.add("/data.bin", DATA)
    loopback.fail("/data.bin", fault)
    with pytest.raises(TransientFetchError, match=message) as info:
        fetch(pinned(url), tmp_path)
    assert url in str(info.value)
    assert cache_files(tmp_path) == []  # no partial file, anywhere in the cache
    assert fetch(pinned(url), tmp_path).read_bytes() == DATA  # the next try succeeds


def test_checksum_mismatch_is_final_and_names_both_hashes(loopback, tmp_path):
    url = loopback.add("/data.bin", DATA)
    loopback.fail("/data.bin", "corrupt")
    with pytest.raises(FetchError) as info:
        fetch(pinned(url), tmp_path)
    assert not isinstance(info.value, TransientFetchError)
    got = hashlib.sha256(bytes(b ^ 0xFF for b in DATA[:16]) + DATA[16:]).hexdigest()
    assert str(info.value) == f"{url}: sha256 mismatch: expected {SHA}, got {got}"
    assert cache_files(tmp_path) == []


def test_not_found_is_final(loopback, tmp_path):
    url = loopback.url + "/missing.bin"
    with pytest.raises(FetchError, match="missing.bin: HTTP 404") as info:
        fetch(pinned(url), tmp_path)
    assert not isinstance(info.value, TransientFetchError)


def test_connection_refused_is_transient(tmp_path):
    with pytest.raises(TransientFetchError, match="127.0.0.1:9"):
        fetch(pinned("http://127.0.0.1:9/data.bin"), tmp_path, timeout=5)


def test_local_path_and_file_url(tmp_path):
    src = tmp_path / "src" / "my data.bin"
    src.parent.mkdir()
    src.write_bytes(DATA)
    cache = tmp_path / "cache"
    assert fetch(pinned(str(src)), cache).read_bytes() == DATA
    assert fetch(pinned(src.as_uri()), cache).name == SHA
    with pytest.raises(FetchError, match="no such file"):
        fetch(pinned(str(tmp_path / "nope.bin")), cache)
    src.write_bytes(DATA[:-1] + b"!")
    with pytest.raises(FetchError, match="sha256 mismatch"):
        fetch(pinned(str(src)), cache)


def test_only_stale_parts_are_removed(tmp_path):
    (tmp_path / "tmp").mkdir()
    old, fresh = tmp_path / "tmp" / "a.part", tmp_path / "tmp" / "b.part"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (day_ago, day_ago))
    assert remove_stale_parts(tmp_path) == 1
    assert not old.exists() and fresh.exists()
