"""`bertflow ui`: a Prefect server and an MLflow server on 127.0.0.1 over the home's state, each
in a process group of its own that dies with the `bertflow` process (flows/children.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from flows import children


def mlflow_command(home: Path, port: int) -> list[str]:
    store = home / "mlflow"
    store.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
            "--default-artifact-root", str(store / "artifacts")]


def prefect_command(port: int) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
            "--port", str(port)]


def wait_until_up(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s") from None
            time.sleep(0.5)


def start_uis(home: Path, prefect_port: int, mlflow_port: int) -> list[subprocess.Popen]:
    """Both servers started and answering; the caller stops them."""
    # `prefect server start --port` does not tell the UI where its API is: the UI would call
    # :4200/api (or PREFECT_API_URL) unless PREFECT_SERVER_UI_API_URL names this server.
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect"),
           "PREFECT_SERVER_UI_API_URL": f"http://127.0.0.1:{prefect_port}/api",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    servers = [children.start(prefect_command(prefect_port), env),
               children.start(mlflow_command(home, mlflow_port), env)]
    try:
        wait_until_up(f"http://127.0.0.1:{prefect_port}/api/health")
        wait_until_up(f"http://127.0.0.1:{mlflow_port}/health")
    except BaseException:
        stop(servers)
        raise
    return servers


def stop(servers: list[subprocess.Popen]) -> None:
    """Each server's whole process group (`mlflow server` forks uvicorn): SIGTERM, then
    SIGKILL after 20 s."""
    children.stop(*servers, timeout_s=20)


def serve_uis(home: Path, prefect_port: int, mlflow_port: int,
              echo: Callable[[str], None] = print) -> None:
    servers = start_uis(home, prefect_port, mlflow_port)
    echo(f"Prefect UI: http://127.0.0.1:{prefect_port}\nMLflow UI:  http://127.0.0.1:{mlflow_port}\n"
         "Ctrl-C stops both.")
    try:
        while all(s.poll() is None for s in servers):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop(servers)
