"""Register stage: one MLflow run per pipeline run, then the served model promoted on merit only.

    run in experiment cfg.experiment    params: the pipeline config; metrics: dev_<name>, train_loss
                                        and learning_rate per step, epoch_loss/epoch_accuracy per
                                        epoch; artifacts eval/, data/, train/; models keras_model
                                        (logits) and classifier (raw text -> probability)
    new version of cfg.model_name       alias `challenger`; alias `champion` moves to it only when
                                        it is not collapsed and beats the champion's
                                        dev_<promote_metric>

The store is explicit everywhere (an `MlflowClient` per call); MLflow's model logging and loading
only read the process-wide tracking URI, so `using_tracking_uri` sets it and puts it back.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import requests
from mlflow.entities import Metric, Param, RunStatus, ViewType
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import (RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST,
                                          TEMPORARILY_UNAVAILABLE, ErrorCode)
from mlflow.types import ColSpec, Schema, TensorSpec
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

import bert_core
from bert_core.model import FEATURE_NAMES
from tasks.caching import BY_CONTENT
from tasks.config import RegistryConfig
from tasks.records import EvalReport, ModelVersion, TrainedModel
from tasks.retry import retry_on

CHALLENGER, CHAMPION = "challenger", "champion"
KERAS_MODEL, CLASSIFIER = "keras_model", "classifier"
RUN_KEY_TAG = "bertflow.run_key"  # one MLflow run per (Prefect flow run, trained model)
DECISION_TAG = "promotion_decision"
STORE_DB = "mlflow/mlflow.db"  # the default store, under the pipeline's home
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")  # logged as a model from code
BERT_CORE_DIR = Path(bert_core.__file__).parent  # shipped with it, so it loads without bertflow
PAIR_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "sentence1"), ColSpec("string", "sentence2")]),
    outputs=Schema([ColSpec("double", "probability")]))
_BACKEND_PACKAGE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
_log = logging.getLogger(__name__)
_GLOBAL_URI_LOCK = threading.RLock()


# -- the store ------------------------------------------------------------------------------------

def tracking_uri(cfg: RegistryConfig, home: Path) -> str:
    """cfg.tracking_uri, or a SQLite store in the pipeline's home.

    >>> tracking_uri(RegistryConfig(), Path("/srv/bertflow"))
    'sqlite:////srv/bertflow/mlflow/mlflow.db'
    """
    return cfg.tracking_uri or f"sqlite:///{(Path(home).resolve() / STORE_DB).as_posix()}"


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def open_store(cfg: RegistryConfig, home: Path) -> tuple[mlflow.MlflowClient, str]:
    """A client on the store and the id of cfg.experiment, created when missing. A SQLite store
    keeps its artifacts beside its file, in artifacts/ (MLflow's default is ./mlruns of whatever
    directory the process runs in)."""
    uri = tracking_uri(cfg, home)
    artifacts = None
    if db := _sqlite_file(uri):
        db.parent.mkdir(parents=True, exist_ok=True)
        artifacts = (db.parent / "artifacts").resolve().as_uri()
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


# -- the run --------------------------------------------------------------------------------------

def pip_requirements() -> list[str]:
    """The serving environment, pinned to what runs here (no inference: it costs seconds)."""
    backend = keras.config.backend()
    names = (_BACKEND_PACKAGE.get(backend, backend), "keras", "numpy", "pandas")
    return [f"{name}=={installed_version(name)}" for name in names]


def keras_signature(max_seq_length: int, num_labels: int) -> ModelSignature:
    inputs = [TensorSpec(np.dtype(np.int32), (-1, max_seq_length), name) for name in FEATURE_NAMES]
    logits = TensorSpec(np.dtype(np.float32), (-1, num_labels), "logits")
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([logits]))


def run_metrics(report: EvalReport, history: dict, timestamp: int) -> list[Metric]:
    """dev_<name> for every dev metric; train_loss and learning_rate per step; epoch_loss and
    epoch_accuracy per epoch (step = the epoch's number)."""
    metrics = [Metric(f"dev_{k}", float(v), timestamp, 0) for k, v in report.metrics.items()]
    for key, values in (("train_loss", history.get("loss", [])),
                        ("learning_rate", history.get("learning_rate", []))):
        metrics += [Metric(key, float(v), timestamp, int(s))
                    for s, v in zip(history.get("steps", []), values)]
    for epoch in history.get("epochs", []):
        metrics += [Metric(f"epoch_{k}", float(epoch[k]), timestamp, int(epoch["epoch"]))
                    for k in ("loss", "accuracy") if k in epoch]
    if history.get("examples_per_second") is not None:
        metrics.append(Metric("train_examples_per_second", float(history["examples_per_second"]),
                              timestamp, 0))
    return metrics


def _log_batches(client, run_id: str, params: dict[str, object], metrics: list[Metric]) -> None:
    """log_batch takes at most 100 params and 1000 metrics per call."""
    items = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100], synchronous=True)
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000], synchronous=True)


def _log_files(client, run_id: str, trained: TrainedModel, report: EvalReport,
               extra_artifacts: list[str]) -> None:
    client.log_artifacts(run_id, report.report_dir, "eval")
    for path in extra_artifacts:
        client.log_artifact(run_id, path, "data")
    for name in ("history.json", "bert_config.json", "train_config.json"):
        if (Path(trained.model_dir) / name).is_file():
            client.log_artifact(run_id, str(Path(trained.model_dir) / name), "train")


def log_models(client, run_id: str, trained: TrainedModel) -> None:
    """The Keras model (features -> logits) and the served classifier (text -> probability).
    Ends the run: FINISHED when both are logged, FAILED otherwise."""
    model = keras.saving.load_model(trained.keras_file, compile=False)
    requirements = pip_requirements()
    config = {"max_seq_length": trained.max_seq_length, "do_lower_case": trained.do_lower_case,
              "labels": list(trained.labels)}
    with tempfile.TemporaryDirectory() as tmp, using_tracking_uri(client.tracking_uri), \
            mlflow.start_run(run_id=run_id, nested=True):
        config_file = Path(tmp) / "model_config.json"
        config_file.write_text(json.dumps(config))
        mlflow.keras.log_model(model, name=KERAS_MODEL, pip_requirements=requirements, signature=
                               keras_signature(trained.max_seq_length, len(trained.labels)))
        mlflow.pyfunc.log_model(
            name=CLASSIFIER, python_model=PYFUNC_CODE, code_paths=[str(BERT_CORE_DIR)],
            artifacts={"keras_model": str(trained.keras_file), "vocab": str(trained.vocab_file),
                       "model_config": str(config_file)},
            signature=PAIR_SIGNATURE, pip_requirements=requirements)


def _reusable_run(client, experiment_id: str, run_key: str | None) -> str | None:
    """The finished run logged under `run_key` by an earlier attempt, if any; unfinished ones (a
    crash halfway through logging) are deleted, so that a retry leaves one run."""
    if run_key is None:
        return None
    runs = client.search_runs([experiment_id], f"tags.`{RUN_KEY_TAG}` = '{run_key}'",
                              run_view_type=ViewType.ACTIVE_ONLY)
    finished = RunStatus.to_string(RunStatus.FINISHED)
    for run in runs:
        if run.info.status != finished:
            _log.warning("deleting run %s: an earlier attempt left it %s", run.info.run_id,
                         run.info.status)
            client.delete_run(run.info.run_id)
    return next((r.info.run_id for r in runs if r.info.status == finished), None)


def log_training_run(client, experiment_id: str, trained: TrainedModel, report: EvalReport,
                     params: dict[str, object], tags: dict[str, str], extra_artifacts: list[str],
                     parent_run_id: str | None = None, flow_run_id: str | None = None,
                     run_key: str | None = None) -> str:
    """Log one pipeline run (see the module docstring) and return its run id. With a `run_key`,
    a finished run under that key is returned as it is instead of logging a second one."""
    if reused := _reusable_run(client, experiment_id, run_key):
        return reused
    run_tags = {**tags, "collapsed": str(report.collapsed).lower(),
                "model_sha256": trained.model_sha256, "init": trained.init}
    optional = {"collapse_reason": report.collapse_reason, "prefect.flow_run_id": flow_run_id,
                RUN_KEY_TAG: run_key, "mlflow.parentRunId": parent_run_id}
    run_tags.update({k: str(v) for k, v in optional.items() if v is not None})
    run_id = client.create_run(experiment_id, run_name=f"finetune-{trained.model_sha256[:8]}",
                               tags=run_tags).info.run_id
    try:
        history = json.loads(trained.history_file.read_text())
        _log_batches(client, run_id, params, run_metrics(report, history, int(time.time() * 1000)))
        _log_files(client, run_id, trained, report, extra_artifacts)
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    log_models(client, run_id, trained)
    return run_id


# -- the registry ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    promoted: bool
    code: str  # promotion_decision tag: promoted, not-better, collapsed or no-champion-metric
    reason: str


def decide(metric: str, value: float, collapsed: bool, champion_version: str | None,
           champion_value: float | None, collapse_reason: str | None = None) -> Decision:
    """Promote a version that did not collapse and strictly beats the champion (or has none).

    >>> decide("f1", 0.86, False, "2", 0.81).reason
    'promoted: f1 0.8600 > champion v2 0.8100'
    >>> decide("f1", 0.81, False, "2", 0.81).reason
    'not promoted: f1 0.8100 <= champion v2 0.8100'
    >>> decide("f1", 0.90, True, None, None, "predicts 1 for 100% of dev").reason
    'not promoted: collapsed (predicts 1 for 100% of dev)'
    """
    if collapsed:
        return Decision(False, "collapsed", f"not promoted: collapsed ({collapse_reason})")
    if champion_version is None:
        return Decision(True, "promoted", f"promoted: first version, {metric} {value:.4f}")
    if champion_value is None:
        return Decision(False, "no-champion-metric",
                        f"not promoted: champion v{champion_version} has no dev_{metric}")
    if value > champion_value:
        return Decision(True, "promoted", f"promoted: {metric} {value:.4f} > champion "
                                          f"v{champion_version} {champion_value:.4f}")
    return Decision(False, "not-better", f"not promoted: {metric} {value:.4f} <= champion "
                                         f"v{champion_version} {champion_value:.4f}")


def _classifier_model_id(client, run_id: str) -> str:
    """The id of the run's logged `classifier` model (MLflow 3 logs models as LoggedModels)."""
    for output in client.get_run(run_id).outputs.model_outputs:
        if client.get_logged_model(output.model_id).name == CLASSIFIER:
            return output.model_id
    raise MlflowException(f"run {run_id} has no logged model named {CLASSIFIER!r}",
                          error_code=RESOURCE_DOES_NOT_EXIST)


def _version_of_run(client, name: str, run_id: str):
    """The version registered from `run_id` by an earlier attempt, or a new one."""
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        return existing[0]
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    model_id = _classifier_model_id(client, run_id)
    with using_tracking_uri(client.tracking_uri):  # the SQL registry resolves models:/ through it
        return client.create_model_version(name, f"models:/{model_id}", run_id=run_id,
                                           model_id=model_id)


def champion_of(client, name: str, metric: str) -> tuple[str | None, float | None]:
    """The champion's version and its run's dev_<metric> (None, None before the first one)."""
    # From the registered model's aliases: a missing alias raises INVALID_PARAMETER_VALUE.
    version = client.get_registered_model(name).aliases.get(CHAMPION)
    if version is None:
        return None, None
    version = str(version)  # the SQL store gives ints, the REST store strings
    run_id = client.get_model_version(name, version).run_id
    return version, client.get_run(run_id).data.metrics.get(f"dev_{metric}") if run_id else None


def _record(client, name: str, version: str, decision: Decision, metric: str, value: float,
            champion: tuple[str | None, float | None]) -> None:
    """Decision tags and description first, the promotion_decision tag last: its presence means
    the whole decision is on the version."""
    tags = {"promote_metric": metric, "value": repr(value),
            "champion_version": champion[0] or "none",
            "champion_value": "none" if champion[1] is None else repr(champion[1])}
    for key, tag_value in tags.items():
        client.set_model_version_tag(name, version, key, tag_value)
    client.update_model_version(name, version, description=decision.reason)
    client.set_model_version_tag(name, version, DECISION_TAG, decision.code)


def register_and_promote(client, run_id: str, report: EvalReport,
                         cfg: RegistryConfig) -> ModelVersion:
    """Register the run's classifier as a new version (alias `challenger`) and move `champion` to
    it when `decide` says so. Safe to call again for the same run: the recorded decision stands."""
    name, metric = cfg.model_name, cfg.promote_metric
    version = _version_of_run(client, name, run_id)
    number = str(version.version)  # the SQL store gives ints, the REST store strings
    if DECISION_TAG not in version.tags:
        value = float(report.metrics.get(metric, float("nan")))
        champion = champion_of(client, name, metric)
        decision = decide(metric, value, report.collapsed, *champion, report.collapse_reason)
        _record(client, name, number, decision, metric, value, champion)
    version = client.get_model_version(name, number)
    client.set_registered_model_alias(name, CHALLENGER, number)
    promoted = version.tags[DECISION_TAG] == "promoted"
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, number)
    aliases = client.get_model_version(name, number).aliases
    champion_value = version.tags["champion_value"]
    return ModelVersion(name=name, version=number, run_id=run_id,
                        aliases=tuple(sorted(aliases)), promoted=promoted,
                        decision=version.description, metric=metric,
                        value=float(version.tags["value"]),
                        champion_value=None if champion_value == "none" else float(champion_value))


# -- serving --------------------------------------------------------------------------------------

def load_model(model_uri: str | None, home: Path, cfg: RegistryConfig):
    """The served classifier (`mlflow.pyfunc.PyFuncModel`): `model_uri`, or the champion of
    cfg.model_name in the pipeline's store."""
    uri = tracking_uri(cfg, home)
    db = _sqlite_file(uri)
    if model_uri is None and db and not db.is_file():
        raise FileNotFoundError(f"no MLflow store at {db}: run the pipeline first, "
                                "or give a model URI")
    with using_tracking_uri(uri):
        return mlflow.pyfunc.load_model(model_uri or f"models:/{cfg.model_name}@{CHAMPION}")


def predict_pairs(model, pairs: list[tuple[str, str]]) -> list[float]:
    """The paraphrase probability of each (sentence1, sentence2) pair."""
    if not pairs:
        return []
    frame = pd.DataFrame(pairs, columns=["sentence1", "sentence2"])
    return [float(p) for p in model.predict(frame)["probability"]]


# -- the task -------------------------------------------------------------------------------------

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




def promotion_markdown(version: ModelVersion, metrics: dict[str, float],
                       champion_version: str | None, champion_metrics: dict[str, float]) -> str:
    """The decision and the dev metrics beside those of the champion it was compared with."""
    before = f"v{champion_version} (champion before)" if champion_version else "no champion before"
    rows = [f"| {k} | {v:.4g} | "
            + (f"{champion_metrics[f'dev_{k}']:.4g}" if f"dev_{k}" in champion_metrics else "-")
            + " |" for k, v in metrics.items()]
    return "\n".join([
        f"# {version.name} v{version.version}: {'promoted' if version.promoted else 'registered'}",
        "", version.decision, "",
        f"| dev metric | v{version.version} | {before} |", "|---|---|---|", *rows, "",
        f"Aliases now: {', '.join(version.aliases)}. MLflow run `{version.run_id}`."])


def _compared_with(client, name: str, version: str) -> tuple[str | None, dict[str, float]]:
    champion = client.get_model_version(name, version).tags.get("champion_version", "none")
    if champion == "none":
        return None, {}
    return champion, client.get_run(client.get_model_version(name, champion).run_id).data.metrics


def _log_run(trained: TrainedModel, report: EvalReport, cfg: RegistryConfig, home: str,
             params: dict[str, object], tags: dict[str, str], extra_artifacts: list[str],
             parent_run_id: str | None) -> tuple[mlflow.MlflowClient, str]:
    """The store's client and this flow run's MLflow run for `trained` (logged once per flow run:
    a retry, or `register` after `track`, finds the finished one)."""
    flow_run_id = flow_run.id
    run_key = f"{flow_run_id}/{trained.model_sha256[:16]}" if flow_run_id else None
    client, experiment_id = open_store(cfg, Path(home))
    return client, log_training_run(client, experiment_id, trained, report, params, tags,
                                    extra_artifacts, parent_run_id=parent_run_id,
                                    flow_run_id=flow_run_id, run_key=run_key)


@task(name="track", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=1),
      retry_condition_fn=retry_on(TransientRegistryError))
def track(trained: TrainedModel, report: EvalReport, cfg: RegistryConfig, home: str,
          params: dict[str, object], tags: dict[str, str], extra_artifacts: list[str],
          parent_run_id: str | None = None) -> str:
    """Log the run to MLflow without registering it (a sweep's trials); returns its run id."""
    with transient_errors(tracking_uri(cfg, Path(home))):
        return _log_run(trained, report, cfg, home, params, tags, extra_artifacts,
                        parent_run_id)[1]


@task(name="register", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=1),
      retry_condition_fn=retry_on(TransientRegistryError), **BY_CONTENT)
def register(trained: TrainedModel, report: EvalReport, cfg: RegistryConfig, home: str,
             params: dict[str, object], tags: dict[str, str], extra_artifacts: list[str],
             parent_run_id: str | None = None) -> ModelVersion:
    """Log the run to MLflow, register the classifier, move `champion` to it on merit only."""
    with transient_errors(tracking_uri(cfg, Path(home))):
        client, run_id = _log_run(trained, report, cfg, home, params, tags, extra_artifacts,
                                  parent_run_id)
        version = register_and_promote(client, run_id, report, cfg)
        champion = _compared_with(client, version.name, version.version)
    create_markdown_artifact(key="model-promotion",
                             markdown=promotion_markdown(version, report.metrics, *champion),
                             description=f"{version.name} v{version.version}: {version.decision}")
    get_run_logger().info("%s v%s from run %s: %s; aliases %s", version.name, version.version,
                          run_id, version.decision, ", ".join(version.aliases))
    return version
