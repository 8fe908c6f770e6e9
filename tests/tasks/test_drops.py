"""Finding the newest data drop: in a folder (sort order, LATEST, folders still being written),
over HTTP (a LATEST file, or the folder listing Python's http.server gives), and the task and
data slices that then read it."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data_contracts.specs import TaskConfig
from tasks.config import DataConfig
from tasks.download import download_data
from tasks.drops import Drop, in_drop, newest_drop
from tasks.fetch import FetchError, TransientFetchError
from tests.fixtures import write_release_zip
from tests.task_files import write_task_files

DROPS = ("2026-11-09", "2026-11-30", "2026-11-23")  # not in the order they sort


def make_drops(folder: Path, names=DROPS) -> Path:
    """A drop location: one folder per name, each holding a file that names it."""
    for name in names:
        (folder / name).mkdir(parents=True)
        (folder / name / "train.tsv").write_text(f"{name}\n")
    return folder


def test_the_newest_drop_is_the_last_folder_in_sort_order(tmp_path):
    drops = make_drops(tmp_path / "drops")
    (drops / "notes.txt").write_text("a file is no drop\n")
    (drops / ".2026-12-07.tmp").mkdir()  # a drop being copied in
    (drops / ".zzz").mkdir()
    assert newest_drop(str(drops)) == Drop(name="2026-11-30", location=str(drops / "2026-11-30"))
    assert newest_drop(drops.as_uri()).name == "2026-11-30"


def test_latest_overrides_the_sort_order(tmp_path):
    drops = make_drops(tmp_path / "drops")
    (drops / "LATEST").write_text("2026-11-23\r\nthe drop of the 23rd, re-taken\n")
    assert newest_drop(str(drops)) == Drop(name="2026-11-23", location=str(drops / "2026-11-23"))


@pytest.mark.parametrize("latest", ["../elsewhere", "2026-11/30", "..", ""])
def test_latest_must_name_one_folder_of_the_location(tmp_path, latest):
    drops = make_drops(tmp_path / "drops")
    (drops / "LATEST").write_text(latest + "\n")
    with pytest.raises(FetchError, match=r"LATEST: .* is not a drop folder name"):
        newest_drop(str(drops))


def test_a_location_without_drops_is_named(tmp_path):
    empty = tmp_path / "empty"
    (empty / ".2026-11-30.tmp").mkdir(parents=True)
    with pytest.raises(FetchError, match=f"{empty}: no data drop in it"):
        newest_drop(str(empty))
    with pytest.raises(FetchError, match=f"{tmp_path / 'absent'}: no such drop folder"):
        newest_drop(str(tmp_path / "absent"))


def test_over_http_the_latest_file_names_the_drop(loopback):
    loopback.add("/drops/LATEST", b"2026-11-23\n")
    drop = newest_drop(loopback.url + "/drops/")
    assert drop == Drop(name="2026-11-23", location=loopback.url + "/drops/2026-11-23")
    assert loopback.requests == ["/drops/LATEST"]


def test_over_http_a_bad_latest_is_refused_and_a_server_error_is_transient(loopback):
    loopback.add("/drops/LATEST", b"../../etc\n")
    with pytest.raises(FetchError, match="is not a drop folder name"):
        newest_drop(loopback.url + "/drops")
    loopback.fail("/drops/LATEST", "500")
    with pytest.raises(TransientFetchError, match="HTTP 500"):
        newest_drop(loopback.url + "/drops")


@pytest.fixture
def served(tmp_path):
    """Python's http.server (as `python -m http.server` runs it) over tmp_path/www, on
    127.0.0.1, stopped after the test."""
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    root = tmp_path / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_over_http_without_latest_the_folder_listing_is_read(served):
    root, url = served
    make_drops(root / "drops", (*DROPS, "2026-11-16 re-run"))
    (root / "drops" / "README.txt").write_text("one folder per weekly drop\n")
    drop = newest_drop(url + "/drops")
    assert drop == Drop(name="2026-11-30", location=url + "/drops/2026-11-30")
    (root / "drops" / "2026-12-07").mkdir()
    assert newest_drop(url + "/drops/").location == url + "/drops/2026-12-07"
    (root / "empty").mkdir()
    with pytest.raises(FetchError, match=f"{url}/empty: no data drop in it"):
        newest_drop(url + "/empty")


def test_a_built_in_task_reads_the_drop_as_its_source(tmp_path):
    drop = Drop(name="2026-11-30", location=str(tmp_path / "2026-11-30"))
    task, data = in_drop(TaskConfig(name="rte"), DataConfig(source="/old/source", workers=3),
                         drop)
    assert task == TaskConfig(name="rte")
    assert (data.source, data.workers) == (drop.location, 3)
    assert in_drop(TaskConfig(name="rte"), data, None) == (TaskConfig(name="rte"), data)


def test_a_custom_task_reads_its_relative_files_inside_the_drop(tmp_path):
    custom = TaskConfig(name="custom", train="train.csv", dev=str(tmp_path / "pinned.csv"),
                        test="https://example.org/test.csv", text_a="review", label="stars")
    local = Drop(name="2026-11-30", location=str(tmp_path / "drops" / "2026-11-30"))
    task, _ = in_drop(custom, DataConfig(), local)
    assert task.train == str(tmp_path / "drops" / "2026-11-30" / "train.csv")
    assert (task.dev, task.test) == (custom.dev, custom.test)  # absolute ones kept
    assert (task.text_a, task.label) == ("review", "stars")
    remote = Drop(name="2026-11-30", location="http://127.0.0.1:9/drops/2026-11-30")
    task, data = in_drop(custom.model_copy(update={"train": "week 48.csv"}), DataConfig(), remote)
    assert task.train == "http://127.0.0.1:9/drops/2026-11-30/week%2048.csv"
    assert data.source == remote.location


def test_the_newest_drop_is_what_the_download_takes(tmp_path):
    drops = tmp_path / "drops"
    write_task_files("rte", drops / "2026-11-23", seed=1)
    write_task_files("rte", drops / "2026-11-30", seed=2)
    task, data = in_drop(TaskConfig(name="rte"),
                         DataConfig(checkpoint=str(write_release_zip(tmp_path / "tiny.zip"))),
                         newest_drop(str(drops)))
    raw = download_data(data, tmp_path / "home", task=task)
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        assert raw.file(name).read_bytes() == (drops / "2026-11-30" / name).read_bytes()
