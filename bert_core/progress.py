"""Progress a person can follow: counted work, its current rate and the time left, as one line.

    step 150/343 (44%), loss 0.6123, lr 1.23e-05, 55.1 examples/s, ETA 3m30s

`Meter`, `progress_line` and `bar` know nothing of Keras or Prefect; tasks/progress.py turns a
`Report` into a Prefect progress artifact.
"""

from __future__ import annotations

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

