"""The temporary Prefect API server a `bertflow` command runs its flow against when no
PREFECT_API_URL is set.

Prefect would start one itself on the flow's first API call, but as a plain child process: a
`bertflow run` killed with SIGKILL left it running, and a terminal's Ctrl-C reached it too, so it
could stop before the interrupted run's final state was written. This one is the same server
(uvicorn on Prefect's `create_app`, in Prefect's ephemeral mode: no UI, only the services a
run needs) started under flows/children.py's guard: it dies with this process, however that
ends, and only this process stops it.
"""

from __future__ import annotations

import atexit
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping

from flows import children

# What Prefect's own temporary server is started with (prefect.server.api.server), plus no
# UI and no analytics in any mode.
SERVER_ENV = {"PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
              "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def server_command(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
            "--lifespan", "on"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the server may lose it to another
    process before it binds: `TemporaryAPI.wait_until_up` then starts it on another)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TemporaryAPI:
    """One server process; `start` returns at once so the caller can import while it boots,
    `wait_until_up` blocks until it answers. Stopped at interpreter exit, after Prefect's own
    exit handlers (registered later, run earlier) have flushed their logs and events to it."""

    def __init__(self, env: Mapping[str, str]):
        self.env = {**env, **SERVER_ENV}
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> TemporaryAPI:
        self.stop()  # a server that exited early, if any
        self.port = free_port()
        self.process = children.start(server_command(self.port), self.env)
        atexit.register(self.stop)  # again after a restart: stop() is idempotent
        return self

    def wait_until_up(self, timeout_s: float = 120.0, restarts: int = 2) -> None:
        """Until /health answers; a server that exits first (its port was taken) is started
        again on another port, at most `restarts` times."""
        deadline = time.monotonic() + timeout_s
        while not answers(f"{self.url}/health"):
            code = self.process.poll()
            if code is not None and restarts:
                restarts -= 1
                self.start()
            elif code is not None:
                raise RuntimeError(f"the temporary Prefect API server exited with code {code}")
            elif time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the temporary Prefect API server at {self.url} did not "
                                   f"answer within {timeout_s:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            children.stop(self.process)
            self.process = None


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
