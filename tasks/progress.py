"""Progress a person can follow: counted work, its current rate and the time left, as log lines,
a bar on a terminal, and a Prefect progress artifact that the UI draws.

    step 150/343 (44%), loss 0.6123, lr 1.23e-05, 55.1 examples/s, ETA 3m30s

The pure pieces (`Meter`, `progress_line`, `bar`) know nothing of Keras or Prefect; the two
Prefect helpers return plain callables, so the code they are handed to stays Prefect-free.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Report = Callable[[float, str], None]  # (percent done 0-100, one-line description) -> None


def duration(seconds: float) -> str:
    """A short human duration.

    >>> duration(7.4), duration(210), duration(3725)
    ('7s', '3m30s', '1h02m')
    """
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass
class Meter:
    """Units done out of `total`, from `done` at the start. `read(done)` gives the rate since the
    previous read (the current speed, not the average that includes start-up) and the time left
    at that rate."""

    total: int
    done: int = 0
    clock: Callable[[], float] = time.monotonic
    _last: tuple[int, float] = field(init=False)

    def __post_init__(self):
        self._last = (self.done, self.clock())

    def read(self, done: int) -> tuple[float, float]:
        """(units per second since the last read, seconds left at that rate); starts a new
        window."""
        rate_eta, self._last, self.done = self.peek(done), (done, self.clock()), done
        return rate_eta

    def peek(self, done: int) -> tuple[float, float]:
        """What `read` would say, leaving the window open."""
        before, then = self._last
        rate = (done - before) / max(self.clock() - then, 1e-9)
        return rate, max(self.total - done, 0) / rate if rate > 0 else float("inf")


def progress_line(what: str, done: int, total: int, rate: float, eta: float, unit: str,
                  values: str = "") -> str:
    """'step 150/343 (44%), loss 0.6123, 55.1 examples/s, ETA 3m30s'.

    >>> progress_line("test", 640, 1725, 213.3, 5.1, "pairs/s")
    'test 640/1725 (37%), 213.3 pairs/s, ETA 5s'
    """
    left = duration(eta) if eta != float("inf") else "?"
    head = f"{what} {done}/{total} ({done / max(total, 1):.0%})"
    return ", ".join(p for p in (head, values, f"{rate:.1f} {unit}", f"ETA {left}") if p)


def bar(done: int, total: int, width: int = 24) -> str:
    """A text progress bar.

    >>> bar(150, 343, width=10)
    '[####------]'
    """
    filled = int(width * min(done, total) / max(total, 1))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def run_log(fallback: logging.Logger) -> Callable[[str], None]:
    """The Prefect run logger inside a flow or task run (its lines reach the UI), else
    `fallback`'s info."""
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.logging import get_run_logger

    if TaskRunContext.get() or FlowRunContext.get():
        return get_run_logger().info
    return fallback.info


def task_progress(key: str, description: str) -> Report | None:
    """Inside a Prefect task run: a progress artifact (`key`) at 0%, and the callable that moves
    it; outside one, None. An API error while updating is logged once and further updates are
    dropped: the UI's bar is not worth a failed training run."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact
    from prefect.context import TaskRunContext
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.logging import get_run_logger
    from httpx import HTTPError

    if TaskRunContext.get() is None:
        return None
    artifact = create_progress_artifact(0.0, key=key, description=description)
    broken: list[str] = []

    def report(percent: float, line: str) -> None:
        if broken:
            return
        try:
            update_progress_artifact(artifact, min(max(percent, 0.0), 100.0), description=line)
        except (HTTPError, PrefectHTTPStatusError) as error:
            broken.append(str(error))
            get_run_logger().warning("progress artifact %s: updates stopped (%s)", key, error)

    return report
