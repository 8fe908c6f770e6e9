"""Data drops: a location holding one folder per delivery of the task's files, the newest taken.

    drops/                      a folder, or an http(s) base URL serving the same layout
      2026-11-23/  train.tsv dev.tsv test.tsv
      2026-11-30/  ...          newest: the last name in sort order
      LATEST                    optional: names the drop to take ("2026-11-30"), overriding

A URL is read through its LATEST file, or else the folder listing an HTTP server gives for it
(links ending in "/"). A run records the drop's name; its files' sha256 come from the download.
"""

from __future__ import annotations

import html.parser
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from prefect import task
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict

from data_contracts.specs import TaskConfig
from tasks.config import DataConfig
from tasks.fetch import FetchError, Source, TransientFetchError
from tasks.retry import retry_on


class Drop(BaseModel):
    """One delivery: its name (the folder's) and where its files are."""

    model_config = ConfigDict(frozen=True)
    name: str
    location: str  # the drop's folder, or its base URL


def _is_url(location: str) -> bool:
    return urllib.parse.urlsplit(location).scheme in ("http", "https")


def _checked(name: str, location: str) -> str:
    """A drop's name as given by LATEST or a listing: one plain folder name."""
    name = name.strip().rstrip("/")
    if not name or "/" in name or name.startswith("."):
        raise FetchError(f"{location}: {name!r} is not a drop folder name")
    return name


def local_drops(folder: Path) -> list[str]:
    """The drop folders in `folder`, oldest first (hidden ones, being written, are not drops)."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        href = dict(attrs).get("href") if tag == "a" else None
        if href and href.endswith("/") and not href.startswith(("/", "?", ".", "http")):
            self.links.append(urllib.parse.unquote(href.rstrip("/")))


def listed_drops(page: str) -> list[str]:
    """The sub-folder links of an HTTP folder listing, oldest first.

    >>> listed_drops('<a href="../">up</a><a href="2026-11-30/">x</a><a href="2026-11-23/">y</a>'
    ...              '<a href=".2026-12-07/">being written</a><a href="notes.txt">n</a>')
    ['2026-11-23', '2026-11-30']
    """
    parser = _Links()
    parser.feed(page)
    return sorted(set(parser.links))


def _get(url: str, timeout: float) -> str | None:
    """The body of `url` as text; None for a 404."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        error = TransientFetchError if err.code >= 500 else FetchError
        raise error(f"{url}: HTTP {err.code}") from None
    except OSError as err:
        raise TransientFetchError(f"{url}: {err}") from None


def newest_drop(location: str, timeout_s: float = 60.0) -> Drop:
    """The drop LATEST names, else the last drop folder in sort order."""
    if _is_url(location):
        base = location.rstrip("/") + "/"
        latest = _get(base + "LATEST", timeout_s)
        if latest is not None:
            names = [_checked(latest.splitlines()[0] if latest.strip() else "", base + "LATEST")]
        else:
            names = listed_drops(_get(base, timeout_s) or "")
        join = lambda name: base + urllib.parse.quote(name)  # noqa: E731
    else:
        folder = Source("", location).local_path()
        if not folder.is_dir():
            raise FetchError(f"{location}: no such drop folder")
        latest = folder / "LATEST"
        names = ([_checked(latest.read_text().split("\n")[0], str(latest))] if latest.is_file()
                 else local_drops(folder))
        if latest.is_file() and not (folder / names[-1]).is_dir():
            raise FetchError(f"{latest}: names {names[-1]!r}, which is not a folder in {location}")
        join = lambda name: str(folder / name)  # noqa: E731
    if not names:
        raise FetchError(f"{location}: no data drop in it (a folder per drop, or a LATEST file)")
    return Drop(name=names[-1], location=join(names[-1]))


def in_drop(task_cfg: TaskConfig, data: DataConfig, drop: Drop | None) -> tuple[TaskConfig,
                                                                                 DataConfig]:
    """The task and data slices reading the drop: its folder is the source, and a custom task's
    relative file names are files in it."""
    if drop is None:
        return task_cfg, data

    def inside(name: str | None) -> str | None:
        if name is None or _is_url(name) or name.startswith("file:") or Path(name).is_absolute():
            return name
        return (drop.location.rstrip("/") + "/" + urllib.parse.quote(name) if _is_url(drop.location)
                else str(Path(drop.location) / name))

    if task_cfg.name == "custom":
        task_cfg = task_cfg.model_copy(update={split: inside(getattr(task_cfg, split))
                                               for split in ("train", "dev", "test")})
    return task_cfg, data.model_copy(update={"source": drop.location})


@task(name="find-drop", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
      retry_condition_fn=retry_on(TransientFetchError))
def find_drop(data: DataConfig) -> Drop | None:
    """The newest drop at data.drops (None without one: the run reads data.source)."""
    return newest_drop(data.drops, data.timeout_s) if data.drops else None
