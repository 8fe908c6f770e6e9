"""The MLflow store a pipeline writes to, and which of its failures are worth a retry.

The store is explicit everywhere (an `MlflowClient` per call); MLflow's model logging and loading
only read the process-wide tracking URI, so `using_tracking_uri` sets it and puts it back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, TEMPORARILY_UNAVAILABLE, ErrorCode

from tasks.atomic import exclusive
from tasks.config import RegistryConfig

STORE_DB = "mlflow/mlflow.db"  # the default store, under the pipeline's home
KERAS_MODEL, CLASSIFIER = "keras_model", "classifier"  # the models each run logs
_GLOBAL_URI_LOCK = threading.RLock()


def tracking_uri(cfg: RegistryConfig, home: Path) -> str:
    """cfg.tracking_uri, or a SQLite store in the pipeline's home.

    >>> tracking_uri(RegistryConfig(), Path("/srv/bertflow"))
    'sqlite:////srv/bertflow/mlflow/mlflow.db'
    """
    return cfg.tracking_uri or f"sqlite:///{(Path(home).resolve() / STORE_DB).as_posix()}"


def sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def filled(cfg: RegistryConfig) -> RegistryConfig:
    """`cfg` if it names its experiment, model and promote metric (the task fills them in).

    >>> filled(RegistryConfig(experiment="e", model_name="m", promote_metric="f1")).model_name
    'm'
    >>> filled(RegistryConfig(model_name="m"))
    Traceback (most recent call last):
    ...
    ValueError: RegistryConfig has no experiment, promote_metric (see RegistryConfig.for_task)
    """
    missing = [k for k in ("experiment", "model_name", "promote_metric")
               if getattr(cfg, k) is None]
    if missing:
        raise ValueError(f"RegistryConfig has no {', '.join(missing)} "
                         "(see RegistryConfig.for_task)")
    return cfg


def open_store(cfg: RegistryConfig, home: Path) -> tuple[mlflow.MlflowClient, str]:
    """A client on the store and the id of cfg.experiment, created when missing. A SQLite store
    keeps its artifacts beside its file, in artifacts/ (MLflow's default is ./mlruns of whatever
    directory the process runs in)."""
    cfg = filled(cfg)
    uri = tracking_uri(cfg, home)
    artifacts = None
    if db := sqlite_file(uri):
        db.parent.mkdir(parents=True, exist_ok=True)
        artifacts = (db.parent / "artifacts").resolve().as_uri()
        # The first use of a SQLite store creates and migrates its tables; two processes doing
        # that at once collide ("duplicate column name"), so one at a time.
        with exclusive(db.with_name(db.name + ".lock")):
            client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_registered_models(max_results=1)
    else:
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(cfg.experiment)
    if experiment is None:
        try:
            return client, client.create_experiment(cfg.experiment, artifact_location=artifacts)
        except MlflowException as err:  # a parallel run (a sweep) created it first
            if err.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            experiment = client.get_experiment_by_name(cfg.experiment)
    if experiment.lifecycle_stage != "active":
        raise ValueError(f"MLflow experiment {cfg.experiment!r} is deleted: restore it in {uri}")
    return client, experiment.experiment_id


@contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI at `uri` for a block, then restore it. One block
    at a time: a sweep's threads would otherwise restore it under each other's feet, and MLflow
    would fall back to ./mlflow.db."""
    with _GLOBAL_URI_LOCK:
        previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)


class TransientRegistryError(RuntimeError):
    """The tracking server was unreachable or failed on its side: trying again may help."""


def is_transient(err: BaseException, remote: bool) -> bool:
    """Connection errors and timeouts anywhere in the chain; MLflow's TEMPORARILY_UNAVAILABLE (a
    locked SQLite store reads so too); any HTTP 5xx from a remote server. A bad request is final."""
    while err is not None:
        if isinstance(err, (ConnectionError, TimeoutError, requests.ConnectionError,
                            requests.Timeout)):
            return True
        if isinstance(err, MlflowException) and (
                err.error_code == ErrorCode.Name(TEMPORARILY_UNAVAILABLE)
                or (remote and err.get_http_status_code() >= 500)):
            return True
        err = err.__cause__ or err.__context__
    return False


@contextmanager
def transient_errors(uri: str) -> Iterator[None]:
    """Re-raise what `is_transient` accepts as TransientRegistryError, everything else as it is."""
    try:
        yield
    except Exception as err:
        if is_transient(err, remote=uri.startswith(("http://", "https://"))):
            raise TransientRegistryError(f"{uri}: {err}") from err
        raise
