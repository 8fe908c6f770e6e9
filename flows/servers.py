"""`bertflow ui`: a Prefect server and an MLflow server on 127.0.0.1, each in a process group of
its own that dies with the `bertflow` process (flows/children.py).

By default both keep their state in the home's SQLite files, the ones `bertflow run` writes;
`Stores` puts it in databases instead (PostgreSQL: docs/scaling.md), for servers that several
workers share."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flows import children


@dataclass(frozen=True)
class Stores:
    """Where the two servers keep their state; None is the home's SQLite file."""

    prefect_database: str | None = None  # postgresql+asyncpg://user@host:5432/prefect
    mlflow_backend: str | None = None  # postgresql+psycopg://user@host:5432/mlflow
    artifacts: str | Path | None = None  # MLflow's artifacts: a folder (or s3://...) it writes


def mlflow_command(home: Path, port: int, backend_store_uri: str | None = None,
                   artifacts: str | Path | None = None) -> list[str]:
    """`mlflow server` on 127.0.0.1:port with one worker.

    With neither store given, over the home's SQLite store: its experiments (created by
    `bertflow run`) name their artifact folder, <home>/mlflow/artifacts, and clients read and
    write there themselves. Given a backend store or an artifact folder, the server takes new
    experiments' artifacts itself (`mlflow-artifacts:/`): clients send them over HTTP and the
    server writes them under `artifacts` (default <home>/mlflow/artifacts), so a worker on
    another machine needs no path to the folder.

    >>> mlflow_command(Path("/srv"), 5000, "postgresql+psycopg://u@db/mlflow", "/shared/a")[3:]
    ['server', '--host', '127.0.0.1', '--port', '5000', '--workers', '1', '--backend-store-uri', \
'postgresql+psycopg://u@db/mlflow', '--serve-artifacts', '--artifacts-destination', '/shared/a']
    """
    store = home / "mlflow"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
               str(port), "--workers", "1", "--backend-store-uri"]
    if backend_store_uri is None:
        store.mkdir(parents=True, exist_ok=True)
        command.append(f"sqlite:///{store / 'mlflow.db'}")
        if artifacts is None:
            return [*command, "--default-artifact-root", str(store / "artifacts")]
    else:
        command.append(backend_store_uri)
    return [*command, "--serve-artifacts", "--artifacts-destination",
            str(artifacts or store / "artifacts")]


def prefect_command(port: int) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
            "--port", str(port)]


def prefect_env(prefect_home: Path, port: int, database: str | None = None) -> dict[str, str]:
    """The settings `prefect server start --port <port>` runs with, over `prefect_home`, or
    over `database` (Prefect migrates it on start) where one is given.

    `prefect server start --port` does not tell the UI where its API is: the UI would call
    :4200/api (or PREFECT_API_URL) unless PREFECT_SERVER_UI_API_URL names this server.

    >>> env = prefect_env(Path("/srv/prefect"), 4200, "postgresql+asyncpg://u@db/prefect")
    >>> env["PREFECT_API_DATABASE_CONNECTION_URL"], env["PREFECT_SERVER_UI_API_URL"]
    ('postgresql+asyncpg://u@db/prefect', 'http://127.0.0.1:4200/api')
    """
    env = {"PREFECT_HOME": str(prefect_home),
           "PREFECT_SERVER_UI_API_URL": f"http://127.0.0.1:{port}/api"}
    if database is not None:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database
    return env


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


def start_uis(home: Path, prefect_port: int, mlflow_port: int,
              stores: Stores = Stores()) -> list[subprocess.Popen]:
    """Both servers started and answering; the caller stops them."""
    # A local `mlflow server` stays light only without its job runner (and with one worker).
    env = {**os.environ, **prefect_env(home / "prefect", prefect_port, stores.prefect_database),
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow = mlflow_command(home, mlflow_port, stores.mlflow_backend, stores.artifacts)
    servers = [children.start(prefect_command(prefect_port), env), children.start(mlflow, env)]
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
              echo: Callable[[str], None] = print, stores: Stores = Stores()) -> None:
    servers = start_uis(home, prefect_port, mlflow_port, stores)
    echo(f"Prefect UI: http://127.0.0.1:{prefect_port}\nMLflow UI:  http://127.0.0.1:{mlflow_port}\n"
         "Ctrl-C stops both.")
    try:
        while all(s.poll() is None for s in servers):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop(servers)
