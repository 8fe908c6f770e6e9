"""Register stage: one MLflow run per pipeline run, then the served model promoted on merit only.

    run finetune-<task>-<sha8> in       params: the pipeline config; tag task; metrics:
    experiment cfg.experiment           dev_<name> (and <split>_<name> for other eval splits),
                                        train_loss and learning_rate per step,
                                        epoch_loss/epoch_accuracy per epoch; artifacts eval/,
                                        data/, train/; models keras_model (logits, or scores)
                                        and classifier (raw text -> label and probabilities, or
                                        score; tasks/pyfunc_model.py; with registry.runtime
                                        onnx it runs its model.onnx in ONNX Runtime)
    calibration fitted on dev           calibration/calibration.json and reliability.png;
                                        metrics calibration_ece/brier_before/after; tags
                                        calibration.temperature/threshold/rule, on the version
                                        too; applied by the classifier (model_config.json)
    new version of cfg.model_name       alias `challenger` once it serves what evaluate computed;
                                        alias `champion` only when the gate finds it significantly
                                        better than the champion on the same evaluation set
                                        (tasks/challenge.py); the decision in
                                        promotion/decision.md
    model card                          the run's model_card.md and the version's description
                                        (tasks/model_card.py)
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from importlib.metadata import version as installed_version
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunStatus, ViewType
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

import bert_core
from bert_core.features import FEATURE_NAMES
from data_contracts.specs import default_metric
from tasks.caching import cached
from tasks.calibration import Calibration, calibrate_report, write_files
from tasks.config import RegistryConfig
from tasks.mlflow_store import (CLASSIFIER, KERAS_MODEL, TransientRegistryError, is_transient,
                                open_store, tracking_uri, transient_errors, using_tracking_uri)
from tasks.challenge import Evidence, verdict
from tasks.model_card import card_for
from tasks.promotion import DECISION_ARTIFACT, register_and_promote
from tasks.records import EvalReport, ModelVersion, TrainedModel
from tasks.retry import retry_on

CARD_ARTIFACT = "model_card.md"
RUN_KEY_TAG = "bertflow.run_key"  # one MLflow run per (Prefect flow run, trained model)
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")  # logged as a model from code
BERT_CORE_DIR = Path(bert_core.__file__).parent  # shipped with it, so it loads without bertflow
OLD_MRPC_INPUTS = ("sentence1", "sentence2")  # MRPC's served model took these first; still does
_BACKEND_PACKAGE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
_log = logging.getLogger(__name__)


# -- the run --------------------------------------------------------------------------------------

def pip_requirements() -> list[str]:
    """The serving environment, pinned to what runs here (no inference: it costs seconds)."""
    import keras

    backend = keras.config.backend()
    names = (_BACKEND_PACKAGE.get(backend, backend), "keras", "numpy", "pandas")
    return [f"{name}=={installed_version(name)}" for name in names]


def keras_signature(max_seq_length: int, num_labels: int) -> ModelSignature:
    inputs = [TensorSpec(np.dtype(np.int32), (-1, max_seq_length), name) for name in FEATURE_NAMES]
    logits = TensorSpec(np.dtype(np.float32), (-1, num_labels), "logits")
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([logits]))


def served_signature(labels: tuple[str, ...], pair: bool, old_names: bool = False
                     ) -> ModelSignature:
    """The classifier's columns: text_a (and text_b, optional, for pairs) in; out `label` and
    `probability_<label>` per class (and `probability`, of the second class, when there are two),
    or `score` for regression (no labels); and `model_version`, the registered "<name>/<version>"
    that answered. `old_names`: MRPC's model also takes sentence1 and sentence2 for text_a and
    text_b, so none of the four is required.

    >>> signature = served_signature(("entailment", "not_entailment"), pair=True)
    >>> [(c.name, c.required) for c in signature.inputs.inputs]
    [('text_a', True), ('text_b', False)]
    >>> signature.outputs.input_names()  # doctest: +NORMALIZE_WHITESPACE
    ['label', 'probability_entailment', 'probability_not_entailment', 'probability',
     'model_version']
    >>> served_signature((), pair=False).outputs.input_names()
    ['score', 'model_version']
    """
    names = ["text_a", "text_b"][:1 + pair]
    names += list(OLD_MRPC_INPUTS[:len(names)]) if old_names else []
    inputs = [ColSpec("string", n, required=n == "text_a" and not old_names) for n in names]
    outputs = [ColSpec("string", "label"), *(ColSpec("double", f"probability_{label}")
                                             for label in labels)] if labels else []
    outputs += [ColSpec("double", "probability")] if len(labels) == 2 else []
    outputs = outputs or [ColSpec("double", "score")]
    return ModelSignature(inputs=Schema(inputs),
                          outputs=Schema([*outputs, ColSpec("string", "model_version")]))


def served_config(trained: TrainedModel, cfg: RegistryConfig | None = None,
                  calibration: Calibration = Calibration()) -> dict[str, object]:
    """The classifier's model_config.json (tasks/pyfunc_model.py): how it reads text, its
    temperature and threshold (none fitted: 1.0 and null) and the limits of serving.

    >>> trained = TrainedModel(model_dir="m", model_sha256="0", steps=1, seconds=1.0,
    ...                        init="scratch", max_seq_length=128, do_lower_case=True,
    ...                        labels=("0", "1"))
    >>> {k: v for k, v in served_config(trained, RegistryConfig(max_batch_rows=64),
    ...                                 Calibration(1.7, 0.42)).items() if k not in ("labels",)}
    ... # doctest: +NORMALIZE_WHITESPACE
    {'max_seq_length': 128, 'do_lower_case': True, 'regression': False, 'pair': True,
     'temperature': 1.7, 'threshold': 0.42, 'max_batch_rows': 64, 'memo_words': 50000,
     'runtime': 'keras'}
    """
    cfg = cfg or RegistryConfig()
    return {"max_seq_length": trained.max_seq_length, "do_lower_case": trained.do_lower_case,
            "labels": list(trained.labels), "regression": trained.regression, "pair": trained.pair,
            **calibration.config(), "max_batch_rows": cfg.max_batch_rows,
            "memo_words": cfg.memo_words, "runtime": cfg.runtime}


def run_metrics(report: EvalReport, history: dict, timestamp: int) -> list[Metric]:
    """dev_<name> for every dev metric and <split>_<name> for every other eval split's; train_loss
    and learning_rate per step; epoch_loss and epoch_accuracy per epoch (step = the epoch's
    number); eval_loss and eval_accuracy per dev evaluation during training (step = the training
    step)."""
    splits = {"dev": report.metrics, **report.splits}
    metrics = [Metric(f"{split}_{k}", float(v), timestamp, 0)
               for split, values in splits.items() for k, v in values.items()]
    for key, values in (("train_loss", history.get("loss", [])),
                        ("learning_rate", history.get("learning_rate", []))):
        metrics += [Metric(key, float(v), timestamp, int(s))
                    for s, v in zip(history.get("steps", []), values)]
    for epoch in history.get("epochs", []):
        metrics += [Metric(f"epoch_{k}", float(epoch[k]), timestamp, int(epoch["epoch"]))
                    for k in ("loss", "accuracy") if k in epoch]
    for evaluation in history.get("evaluations", []):  # dev during training, at its step
        metrics += [Metric(f"eval_{k}", float(evaluation[k]), timestamp, int(evaluation["step"]))
                    for k in ("loss", "accuracy") if k in evaluation]
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
               extra_artifacts: list[str], calibration: Calibration) -> None:
    client.log_artifacts(run_id, report.report_dir, "eval")
    for path in extra_artifacts:
        client.log_artifact(run_id, path, "data")
    for name in ("history.json", "bert_config.json", "train_config.json"):
        if (Path(trained.model_dir) / name).is_file():
            client.log_artifact(run_id, str(Path(trained.model_dir) / name), "train")
    with tempfile.TemporaryDirectory() as tmp:
        write_files(calibration, report.report_dir, trained.labels, Path(tmp))
        client.log_artifacts(run_id, tmp, "calibration")


def log_models(client, run_id: str, trained: TrainedModel, cfg: RegistryConfig | None = None,
               calibration: Calibration = Calibration()) -> None:
    """The Keras model (features -> logits, or scores) and the served classifier (text -> label
    and probabilities, or score, calibrated as `calibration` says). Ends the run: FINISHED when
    both are logged, FAILED otherwise."""
    import keras  # here, not at the top: a cached register never pays TensorFlow's import

    import bert_core.model  # noqa: F401  (registers BertClassifier for load_model)

    model = keras.saving.load_model(trained.keras_file, compile=False)
    requirements = pip_requirements()
    outputs = len(trained.labels) or 1  # a regression model has one
    with tempfile.TemporaryDirectory() as tmp, using_tracking_uri(client.tracking_uri), \
            mlflow.start_run(run_id=run_id, nested=True):
        config_file = Path(tmp) / "model_config.json"
        config_file.write_text(json.dumps(served_config(trained, cfg, calibration)))
        mlflow.keras.log_model(model, name=KERAS_MODEL, pip_requirements=requirements,
                               signature=keras_signature(trained.max_seq_length, outputs))
        artifacts = {"keras_model": str(trained.keras_file), "vocab": str(trained.vocab_file),
                     "model_config": str(config_file)}
        if cfg is not None and cfg.runtime == "onnx":
            artifacts["onnx_model"] = str(onnx_file(model, Path(tmp)))
            requirements = [*requirements, f"onnxruntime=={installed_version('onnxruntime')}"]
        mlflow.pyfunc.log_model(
            name=CLASSIFIER, python_model=PYFUNC_CODE, code_paths=[str(BERT_CORE_DIR)],
            artifacts=artifacts, signature=served_signature(trained.labels, trained.pair,
                                                            old_names=trained.task == "mrpc"),
            pip_requirements=requirements)


def onnx_file(model, folder: Path) -> Path:
    """model.onnx in `folder`: the Keras model's ONNX graph, for the onnx runtime."""
    from bert_core.onnx_export import export_onnx  # needs the `onnx` extra

    return export_onnx(model, folder / "model.onnx")


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
                     run_key: str | None = None, cfg: RegistryConfig | None = None,
                     calibration: Calibration = Calibration()) -> str:
    """Log one pipeline run (see the module docstring) and return its run id. With a `run_key`,
    a finished run under that key is returned as it is instead of logging a second one."""
    if reused := _reusable_run(client, experiment_id, run_key):
        return reused
    run_tags = {**tags, "collapsed": str(report.collapsed).lower(), "task": trained.task,
                "model_sha256": trained.model_sha256, "init": trained.init,
                **calibration.tags()}
    optional = {"collapse_reason": report.collapse_reason, "prefect.flow_run_id": flow_run_id,
                RUN_KEY_TAG: run_key, "mlflow.parentRunId": parent_run_id}
    run_tags.update({k: str(v) for k, v in optional.items() if v is not None})
    run_name = f"finetune-{trained.task}-{trained.model_sha256[:8]}"
    run_id = client.create_run(experiment_id, run_name=run_name, tags=run_tags).info.run_id
    try:
        history = json.loads(trained.history_file.read_text())
        now = int(time.time() * 1000)
        metrics = run_metrics(report, history, now) + [
            Metric(key, value, now, 0) for key, value in calibration.metrics().items()]
        _log_batches(client, run_id, params, metrics)
        _log_files(client, run_id, trained, report, extra_artifacts, calibration)
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    log_models(client, run_id, trained, cfg, calibration)
    return run_id


# -- the tasks -------------------------------------------------------------------------------------

def with_defaults(cfg: RegistryConfig, trained: TrainedModel) -> RegistryConfig:
    """`cfg` with the model's task filling what it leaves open (bertflow-<task>, its metric)."""
    return cfg.defaults(trained.task, default_metric(trained.task, trained.regression))


def calibration_of(trained: TrainedModel, report: EvalReport, cfg: RegistryConfig) -> Calibration:
    """The temperature and threshold fitted on evaluate's dev predictions (cfg.calibrate)."""
    if not cfg.calibrate:
        return Calibration(note="not calibrated (registry.calibrate is off)")
    return calibrate_report(report.report_dir, trained.labels, cfg.threshold, cfg.target_precision)


def _log_run(trained: TrainedModel, report: EvalReport, cfg: RegistryConfig, home: str,
             params: dict[str, object], tags: dict[str, str], extra_artifacts: list[str],
             parent_run_id: str | None, calibration: Calibration
             ) -> tuple[mlflow.MlflowClient, str]:
    """The store's client and this flow run's MLflow run for `trained` (logged once per flow run:
    a retry, or `register` after `track`, finds the finished one)."""
    flow_run_id = flow_run.id
    run_key = f"{flow_run_id}/{trained.model_sha256[:16]}" if flow_run_id else None
    client, experiment_id = open_store(cfg, Path(home))
    return client, log_training_run(client, experiment_id, trained, report, params, tags,
                                    extra_artifacts, parent_run_id=parent_run_id,
                                    flow_run_id=flow_run_id, run_key=run_key, cfg=cfg,
                                    calibration=calibration)


@task(name="track", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=1),
      retry_condition_fn=retry_on(TransientRegistryError))
def track(trained: TrainedModel, report: EvalReport, cfg: RegistryConfig, home: str,
          params: dict[str, object], tags: dict[str, str], extra_artifacts: list[str],
          parent_run_id: str | None = None) -> str:
    """Log the run to MLflow without registering it (a sweep's trials); returns its run id."""
    cfg = with_defaults(cfg, trained)
    calibration = calibration_of(trained, report, cfg)
    with transient_errors(tracking_uri(cfg, Path(home))):
        return _log_run(trained, report, cfg, home, params, tags, extra_artifacts,
                        parent_run_id, calibration)[1]


def version_registered(version: ModelVersion) -> str | None:
    """A cached registration is usable while its version and run still exist in its store."""
    client = mlflow.MlflowClient(version.tracking_uri, registry_uri=version.tracking_uri)
    where = f"{version.name} version {version.version} in {version.tracking_uri}"
    try:
        client.get_run(client.get_model_version(version.name, version.version).run_id)
    except MlflowException as err:
        return f"{where} is gone ({err.error_code})"
    except Exception as err:  # the store is unreachable or broken: register again, with retries
        if is_transient(err, remote=version.tracking_uri.startswith("http")):
            return f"{where} cannot be checked ({type(err).__name__})"
        raise
    return None


def publish_card(client, version: ModelVersion, card: str, calibration: Calibration) -> None:
    """The card as the run's model_card.md and the version's description; the calibration's
    tags on the version."""
    client.log_text(version.run_id, card, CARD_ARTIFACT)
    for key, value in calibration.tags().items():
        client.set_model_version_tag(version.name, version.version, key, value)
    client.update_model_version(version.name, version.version, description=card)


@task(name="register", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=1),
      retry_condition_fn=retry_on(TransientRegistryError),
      **cached("register", __name__, ("mlflow",), checks=(version_registered,)))
def register(trained: TrainedModel, report: EvalReport, cfg: RegistryConfig, home: str,
             params: dict[str, object], tags: dict[str, str], extra_artifacts: list[str],
             evidence: Evidence, parent_run_id: str | None = None) -> ModelVersion:
    """Log the run to MLflow, register the classifier, let the gate decide its aliases, and
    describe the version with its model card."""
    cfg = with_defaults(cfg, trained)
    uri = tracking_uri(cfg, Path(home))
    calibration = calibration_of(trained, report, cfg)
    with transient_errors(uri):
        client, run_id = _log_run(trained, report, cfg, home, params, tags, extra_artifacts,
                                  parent_run_id, calibration)
        version = register_and_promote(
            client, run_id, cfg,
            lambda number: verdict(f"models:/{cfg.model_name}/{number}", uri, trained, report,
                                   evidence, cfg, calibration))
        card = card_for(version, trained, report, calibration, {**tags, **evidence.lineage},
                        cfg, params, extra_artifacts, evidence.manifest)
        publish_card(client, version, card, calibration)
        markdown = client.download_artifacts(run_id, DECISION_ARTIFACT)
    create_markdown_artifact(key="model-promotion", markdown=Path(markdown).read_text(),
                             description=f"{version.name} v{version.version}: {version.decision}")
    get_run_logger().info("%s v%s from run %s: %s; aliases %s", version.name, version.version,
                          run_id, version.decision, ", ".join(version.aliases) or "none")
    return version
