"""registry.runtime onnx: the register stage exports the fine-tuned model to ONNX, and the
served classifier runs it in ONNX Runtime. On a real SQLite MLflow store, through `track` then
`register` in one flow run: the version passes the serving parity check (a fresh process,
served against evaluate at 1e-5), answers as the Keras runtime does, and says what it needs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from prefect import flow

from tasks.challenge import Evidence
from tasks.config import RegistryConfig
from tasks.mlflow_store import open_store, using_tracking_uri
from tasks.records import EvalReport, TrainedModel
from tasks.register import register, track
from tasks.serving import for_task_name
from tests.served_models import (eval_texts, model_outputs, write_examples, write_manifest,
                                 write_report, write_trained)

PARAMS = {"train.learning_rate": 2e-5, "registry.runtime": "onnx"}
LINEAGE = {"task": "mrpc", "drop": "2026-11-30", "data.digest": "d" * 64}
METRICS = {"accuracy": 0.8, "f1": 0.83, "precision": 0.7, "recall": 0.9, "loss": 0.5,
           "roc_auc": 0.8, "majority_baseline": 0.68, "positive_share": 0.7, "examples": 40.0}


@flow
def track_then_register(trained: TrainedModel, report: EvalReport, cfg: RegistryConfig,
                        home: str, evidence: Evidence):
    run_id = track(trained, report, cfg, home, PARAMS, LINEAGE, [])
    return run_id, register(trained, report, cfg, home, PARAMS, LINEAGE, [], evidence)


@pytest.fixture(scope="module")
def onnx_version(prefect_api, tmp_path_factory):
    """A calibrated MRPC model registered with runtime onnx, downloaded as a user gets it."""
    root = tmp_path_factory.mktemp("onnx")
    trained = write_trained(root / "model", "mrpc", ("0", "1"), scale=3.0, gain=30.0)
    frame = eval_texts(40)
    outputs = model_outputs(trained, frame)
    truth = outputs.argmax(axis=1)
    truth[::5] = 1 - truth[::5]
    frame["label"] = [trained.labels[i] for i in truth]
    evidence = Evidence(examples=write_examples(root / "dev.parquet", frame), baseline_label="0",
                        manifest=str(write_manifest(root / "manifest.json", "mrpc",
                                                    trained.labels, "1")), lineage=LINEAGE)
    report = write_report(root / "report", METRICS, dev=(frame, outputs, trained.labels))
    cfg = for_task_name(RegistryConfig(promote_metric="loss", runtime="onnx"), "mrpc")
    run_id, version = track_then_register(trained, report, cfg, str(root / "home"), evidence)
    client, _ = open_store(cfg, root / "home")
    uri = f"models:/{version.name}/{version.version}"
    with using_tracking_uri(client.tracking_uri):
        folder = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(root / "served")))
    return {"frame": frame, "client": client, "run_id": run_id, "version": version,
            "folder": folder}


def with_runtime(folder: Path, runtime: str, dest: Path) -> Path:
    """A copy of the downloaded model whose model_config.json names another runtime."""
    shutil.copytree(folder, dest)
    config_file = dest / "artifacts" / "model_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "runtime": runtime}))
    return dest


def test_the_version_serves_onnx_and_passes_parity(onnx_version):
    version, folder = onnx_version["version"], onnx_version["folder"]
    config = json.loads((folder / "artifacts" / "model_config.json").read_text())
    assert config["runtime"] == "onnx" and (folder / "artifacts" / "model.onnx").is_file()
    tags = onnx_version["client"].get_model_version(version.name, version.version).tags
    assert version.code == "promoted" and "champion" in version.aliases
    assert float(tags["parity.max_abs_difference"]) < 1e-5
    assert version.run_id == onnx_version["run_id"]  # register took track's run


def test_onnx_answers_as_the_keras_runtime(onnx_version, tmp_path):
    frame = onnx_version["frame"][["text_a", "text_b"]]
    onnx_model = mlflow.pyfunc.load_model(str(onnx_version["folder"]))
    served = onnx_model.predict(frame)
    python_model = onnx_model.unwrap_python_model()
    assert python_model.runtime == "onnx" and python_model._model is None  # Keras not loaded
    keras_model = mlflow.pyfunc.load_model(str(with_runtime(onnx_version["folder"], "keras",
                                                            tmp_path / "keras")))
    expected = keras_model.predict(frame)
    assert list(served.columns) == list(expected.columns)
    assert served["model_version"].iloc[0] == f"bertflow-mrpc/{onnx_version['version'].version}"
    np.testing.assert_allclose(served[["probability_0", "probability_1"]].to_numpy(),
                               expected[["probability_0", "probability_1"]].to_numpy(),
                               rtol=0, atol=1e-5)
    assert 0.05 < served["probability"].std()  # answers that vary with the text
    # max_f1's threshold is one of dev's own probabilities: a pair on it may go either way
    threshold = json.loads((onnx_version["folder"] / "artifacts" / "model_config.json")
                           .read_text())["threshold"]
    clear = (served["probability"] - threshold).abs() > 1e-5
    assert clear.sum() >= len(frame) - 2
    pd.testing.assert_series_equal(served["label"][clear], expected["label"][clear])
    assert type(python_model.model).__name__ == "BertClassifier"  # the Keras model, on demand


def test_the_classifier_needs_onnxruntime(onnx_version):
    from importlib.metadata import version as installed

    requirements = (onnx_version["folder"] / "requirements.txt").read_text().split()
    assert f"onnxruntime=={installed('onnxruntime')}" in requirements
    assert any(r.startswith("keras==") for r in requirements)
