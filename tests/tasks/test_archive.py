"""Safe extraction of checkpoint archives."""

from __future__ import annotations

import stat
import zipfile

import pytest

from tasks.archive import ArchiveError, extract_zip


def make_zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extracts_a_release_in_a_folder(tmp_path):
    archive = make_zip(tmp_path / "r.zip", {"rel/bert_config.json": "{}", "rel/vocab.txt": "a\n"})
    out = extract_zip(archive, tmp_path / "out")
    assert (out / "rel" / "vocab.txt").read_text() == "a\n"


@pytest.mark.parametrize("name,rule", [("../evil", "escapes"), ("a/../../evil", "escapes"),
                                       ("/etc/evil", "absolute path")])
def test_rejects_paths_outside_the_folder(tmp_path, name, rule):
    archive = make_zip(tmp_path / "r.zip", {"ok.txt": "fine", name: "evil"})
    with pytest.raises(ArchiveError, match=rule) as info:
        extract_zip(archive, tmp_path / "out" / "x")
    assert name in str(info.value) and str(archive) in str(info.value)
    assert not (tmp_path / "out" / "x").exists()
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out" / "evil").exists()


def test_rejects_links(tmp_path):
    archive = tmp_path / "r.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        link = zipfile.ZipInfo("vocab.txt")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link"):
        extract_zip(archive, tmp_path / "out")


def test_rejects_archives_that_expand_past_the_bound(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros", b"\0" * 1_000_000)
    with pytest.raises(ArchiveError, match="expands to 1000000 bytes, over the bound of 1000"):
        extract_zip(archive, tmp_path / "out", max_bytes=1000)
    assert list(tmp_path.iterdir()) == [archive]  # no temp folder left behind


def test_not_a_zip(tmp_path):
    bad = tmp_path / "r.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ArchiveError, match="not a zip archive"):
        extract_zip(bad, tmp_path / "out")
