"""A throwaway PostgreSQL cluster for tests, and the Prefect and MLflow servers on it.

`throwaway_postgres(tmp_dir)` initialises a cluster in a temp folder (trust auth, one superuser,
UTF8), runs `postgres` on 127.0.0.1 and a free port, its unix socket in that folder, and stops it
with `pg_ctl stop -m fast`. The postmaster runs in the foreground under flows/children.py's guard
(`pg_ctl start` would detach it), so it dies with the test process even after a SIGKILL. initdb
and postgres refuse to run as root: as root, both run as the `postgres` system user, which
Debian's package creates. The cluster's folder is a short one in the system temp folder, which
that user can reach (pytest's tmp folders are private to their owner) and whose socket path fits
the 107 bytes a unix socket name may have; the server's log goes to `tmp_dir`.

`servers_on_postgres(cluster, tmp_dir)` starts `bertflow ui`'s two servers with both stores in
the cluster (a database each) and MLflow's artifacts in a folder of `tmp_dir`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

from flows import children
from flows.servers import Stores, start_uis, stop
from tests.fixtures import free_port

SUPERUSER = "bertflow"
HOST = "127.0.0.1"
DEBIAN_BINARIES = Path("/usr/lib/postgresql")


@dataclass(frozen=True)
class Cluster:
    """A running cluster: databases on 127.0.0.1:port, `user` their superuser (no password)."""

    port: int
    root: Path  # data/ and the unix socket
    user: str = SUPERUSER
    host: str = HOST

    def url(self, db: str = "postgres", driver: str | None = None) -> str:
        """SQLAlchemy's form of a database's URL; libpq (psql, psycopg) reads the driverless one.

        >>> Cluster(5433, Path("/tmp/pg")).url("mlflow", "psycopg")
        'postgresql+psycopg://bertflow@127.0.0.1:5433/mlflow'
        """
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{db}"

    def prefect_url(self, db: str) -> str:
        """PREFECT_API_DATABASE_CONNECTION_URL for `db` (Prefect's driver is asyncpg)."""
        return self.url(db, "asyncpg")

    def mlflow_url(self, db: str) -> str:
        """`mlflow server --backend-store-uri` for `db` (psycopg 3, extra `postgres`)."""
        return self.url(db, "psycopg")

    def create_database(self, name: str) -> str:
        """Database `name`, created unless it exists; its URL without a driver."""
        from psycopg import sql

        with self.connect() as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() \
                    is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def connect(self, db: str = "postgres"):
        """A psycopg connection to `db`, in autocommit mode; close it (`with`)."""
        import psycopg

        return psycopg.connect(self.url(db), autocommit=True, connect_timeout=5)

    def rows(self, db: str, query: str, params: tuple = ()) -> list[tuple]:
        """What `query` returns in `db`."""
        with self.connect(db) as conn:
            return conn.execute(query, params).fetchall()


def find_binaries() -> Path | None:
    """The folder of initdb, pg_ctl and postgres: pg_ctl's on PATH (links followed), else the
    newest /usr/lib/postgresql/<version>/bin (Debian's layout); None if neither has all three."""
    on_path = shutil.which("pg_ctl")
    folders = [Path(on_path).resolve().parent] if on_path else []
    folders += sorted(DEBIAN_BINARIES.glob("*/bin"), reverse=True,
                      key=lambda d: [int(p) for p in d.parent.name.split(".") if p.isdigit()])
    return next((d for d in folders
                 if all((d / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))), None)


def as_postgres_user() -> list[str]:
    """The prefix that runs a command as the `postgres` system user when we are root; none
    otherwise."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root, and there is no `postgres` user to run PostgreSQL "
                           "as (Debian's postgresql package creates one)") from None
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"]
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


def server_command(binaries: Path, root: Path, port: int) -> list[str]:
    """`postgres` in the foreground on 127.0.0.1:port, its socket in `root`; durability off (a
    throwaway cluster need not survive a crash, and fsync costs seconds per migration)."""
    return [str(binaries / "postgres"), "-D", str(root / "data"), "-p", str(port),
            "-k", str(root), "-c", f"listen_addresses={HOST}", "-c", "fsync=off",
            "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]


def wait_until_accepting(cluster: Cluster, server: subprocess.Popen, log: Path,
                         timeout_s: float = 60.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"postgres exited with {server.returncode}:\n{log.read_text()}")
        try:
            with cluster.connect():
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres did not accept connections within {timeout_s:.0f} "
                                   f"s:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.2)


@contextmanager
def throwaway_postgres(tmp_dir: Path) -> Iterator[Cluster]:
    """A cluster accepting connections, stopped (pg_ctl stop -m fast) and deleted at the end;
    its server log is `tmp_dir`/postgres.log."""
    binaries = find_binaries()
    if binaries is None:
        raise FileNotFoundError("no PostgreSQL: initdb, pg_ctl and postgres are neither on PATH "
                                f"nor under {DEBIAN_BINARIES}/*/bin")
    sudo, log = as_postgres_user(), Path(tmp_dir) / "postgres.log"
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    try:
        if sudo:
            shutil.chown(root, user="postgres")
        init = subprocess.run([*sudo, str(binaries / "initdb"), "-D", str(root / "data"),
                               "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                               "--no-locale", "--no-sync"], cwd=root, capture_output=True,
                              text=True)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stderr}")
        cluster = Cluster(free_port(), root)
        with log.open("w") as out:
            server = children.start([*sudo, *server_command(binaries, root, cluster.port)],
                                    cwd=root, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until_accepting(cluster, server, log)
            yield cluster
        finally:
            subprocess.run([*sudo, str(binaries / "pg_ctl"), "stop", "-D", str(root / "data"),
                            "-m", "fast", "-w", "-t", "30"], cwd=root, capture_output=True)
            children.stop(server, timeout_s=10)
    finally:
        shutil.rmtree(root)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


@pytest.fixture(scope="module")
def postgres(tmp_path_factory) -> Iterator[Cluster]:
    """A throwaway cluster for the module's tests. Without PostgreSQL installed the tests skip,
    except in CI (CI=true), where they fail: .ci/run installs it."""
    if find_binaries() is None:
        reason = (f"PostgreSQL is not installed (no initdb/pg_ctl/postgres on PATH or under "
                  f"{DEBIAN_BINARIES}/*/bin)")
        if in_ci():
            pytest.fail(f"{reason}; CI installs it (.ci/run)", pytrace=False)
        pytest.skip(reason)
    with throwaway_postgres(tmp_path_factory.mktemp("postgres")) as cluster:
        yield cluster


class Servers(NamedTuple):
    prefect_api_url: str  # http://127.0.0.1:<port>/api
    mlflow_url: str  # http://127.0.0.1:<port>, the tracking and registry URI
    artifacts: Path  # where the MLflow server writes the artifacts clients send it
    env: dict[str, str]  # a client's environment: both URLs, its own PREFECT_HOME, no telemetry


def client_env(home: Path, prefect_api_url: str, mlflow_url: str) -> dict[str, str]:
    """The caller's environment without its Prefect settings, pointed at both servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "PREFECT_HOME": str(home), "PREFECT_API_URL": prefect_api_url,
            "MLFLOW_TRACKING_URI": mlflow_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true", "GX_ANALYTICS_ENABLED": "false"}


@contextmanager
def servers_on_postgres(cluster: Cluster, tmp_dir: Path, prefect_db: str = "prefect",
                        mlflow_db: str = "mlflow") -> Iterator[Servers]:
    """A Prefect server and an MLflow server on 127.0.0.1, as `bertflow ui` starts them, each
    storing in its database of `cluster` (created if missing); MLflow's artifacts under
    `tmp_dir`/artifacts. Both answer inside the block and are stopped after it."""
    tmp_dir = Path(tmp_dir)
    prefect_port = free_port()
    mlflow_port = free_port()
    while mlflow_port == prefect_port:
        mlflow_port = free_port()
    cluster.create_database(prefect_db)
    cluster.create_database(mlflow_db)
    artifacts = tmp_dir / "artifacts"
    stores = Stores(cluster.prefect_url(prefect_db), cluster.mlflow_url(mlflow_db), artifacts)
    servers = start_uis(tmp_dir / "servers", prefect_port, mlflow_port, stores)
    try:
        api, mlflow = f"http://127.0.0.1:{prefect_port}/api", f"http://127.0.0.1:{mlflow_port}"
        yield Servers(api, mlflow, artifacts, client_env(tmp_dir / "client", api, mlflow))
    finally:
        stop(servers)
