"""The whole pipeline on a tiny generated fixture and a tiny BERT, with real Prefect (test
harness), a real SQLite MLflow store, real GX and real TensorFlow: run, run again (all cached),
change the learning rate (only train, evaluate, register run), sweep, and the CLI as users run it."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from flows.finetune import finetune
from flows.summary import summarize, summarize_sweep
from flows.sweep import sweep
from tasks.config import (ModelConfig, PipelineConfig, SweepConfig, TrainConfig)
from tasks.mlflow_store import tracking_uri
from tasks.serving import load_model, predict_pairs
from tests.artifacts import flow_artifact
from tests.fixtures import FLOW_TASKS, STAGES, run_bertflow

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture(scope="module")
def cfg(tiny_sources, tmp_path_factory) -> PipelineConfig:
    return PipelineConfig(home=str(tmp_path_factory.mktemp("home")), data=tiny_sources,
                          model=ModelConfig(max_seq_length=32),
                          train=TrainConfig(epochs=1, batch_size=4, learning_rate=1e-3))


def run(cfg: PipelineConfig) -> dict:
    summary = summarize(finetune(cfg, return_state=True), cfg)
    assert summary["state"] == "Completed", summary.get("error")
    return summary


def states(summary: dict) -> dict[str, str]:
    """The six stages' states (the flow's other tasks look up the drop, the champion, drift)."""
    return {name: task["state"] for name, task in summary["tasks"].items() if name in STAGES}


def client(cfg: PipelineConfig) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri(cfg.registry, Path(cfg.home)))


@pytest.fixture(scope="module")
def three_runs(cfg) -> dict:
    """The same config twice, then a new learning rate."""
    first = run(cfg)
    model_file = next(Path(cfg.home, "models").glob("*/model.keras"))
    stamp = model_file.stat().st_mtime_ns
    second = run(cfg)
    trained_again = model_file.stat().st_mtime_ns != stamp
    new_lr = cfg.model_copy(update={"train": cfg.train.model_copy(update={"learning_rate": 5e-4})})
    return {"first": first, "second": second, "third": run(new_lr),
            "trained_again": trained_again}


def test_first_run_completes_every_stage_and_registers_a_version(three_runs, cfg):
    first = three_runs["first"]
    assert states(first) == dict.fromkeys(STAGES, "Completed")
    assert list(first["tasks"]) == FLOW_TASKS
    model = first["model"]
    assert (model["name"], model["version"]) == ("bertflow-mrpc", "1")
    assert "challenger" in model["aliases"]
    assert ("champion" in model["aliases"]) == model["promoted"]
    assert set(first["dev_metrics"]) >= {"accuracy", "f1", "precision", "recall", "loss",
                                         "roc_auc", "majority_baseline"}
    version = client(cfg).get_model_version("bertflow-mrpc", "1")
    assert version.run_id == model["run_id"]
    assert version.tags["promotion_decision"] in {"promoted", "collapsed"}
    assert version.tags["promotion_reason"] == model["decision"]
    card = version.description  # the model card, the decision under its title
    assert card.startswith("# bertflow-mrpc v1\n") and model["decision"] in card
    assert "mlflow models serve -m models:/bertflow-mrpc/1" in card


def test_the_run_holds_config_lineage_reports_and_models(three_runs, cfg):
    store = client(cfg)
    run_id = three_runs["first"]["model"]["run_id"]
    mlflow_run = store.get_run(run_id)
    assert mlflow_run.data.params["train.learning_rate"] == "0.001"
    assert mlflow_run.data.params["model.max_seq_length"] == "32"
    assert set(mlflow_run.data.tags) >= {"sha256.train.tsv", "sha256.dev.tsv", "sha256.checkpoint"}
    assert "dev_f1" in mlflow_run.data.metrics and "train_loss" in mlflow_run.data.metrics
    files = {f.path for top in ("eval", "data", "train")
             for f in store.list_artifacts(run_id, top)}
    assert {"eval/metrics.json", "eval/confusion_matrix.png", "eval/roc_curve.png",
            "eval/loss_curve.png", "eval/test_results.tsv", "eval/MRPC.tsv",
            "data/manifest.json", "train/history.json"} <= files
    assert any(name.startswith("data/") and name.endswith(".json") and "manifest" not in name
               for name in files)  # the validation report
    version = three_runs["first"]["model"]["version"]
    served = load_model(f"models:/bertflow-mrpc/{version}", Path(cfg.home), cfg.registry)
    [probability] = predict_pairs(served, [("the company said", "shares rose")])
    assert 0.0 <= probability <= 1.0


def test_the_prefect_ui_shows_validation_confusion_and_promotion(three_runs):
    flow_run_id = three_runs["first"]["flow_run_id"]
    validation = flow_artifact(flow_run_id, "mrpc-validation")
    assert len(validation) > 20 and all(row["success"] == "pass" for row in validation)
    confusion = flow_artifact(flow_run_id, "confusion-matrix")
    assert [row["true"] for row in confusion] == ["0", "1"]
    promotion = flow_artifact(flow_run_id, "model-promotion")
    assert three_runs["first"]["model"]["decision"] in promotion and "95% interval" in promotion


def test_second_run_is_served_entirely_from_cache(three_runs):
    second = three_runs["second"]
    assert states(second) == dict.fromkeys(STAGES, "Cached")
    assert not three_runs["trained_again"]
    assert second["model"]["version"] == three_runs["first"]["model"]["version"]


def test_a_new_learning_rate_reruns_only_train_evaluate_register(three_runs, cfg):
    third = three_runs["third"]
    assert states(third) == {"download": "Cached", "validate": "Cached", "tokenize": "Cached",
                             "train": "Completed", "evaluate": "Completed",
                             "register": "Completed"}
    assert third["model"]["version"] == "2"
    assert len(list(Path(cfg.home, "models").iterdir())) == 2
    params = client(cfg).get_run(third["model"]["run_id"]).data.params
    assert params["train.learning_rate"] == "0.0005"


def test_sweep_groups_trials_under_one_parent_and_registers_the_best(three_runs, cfg):
    grid = SweepConfig(learning_rates=(1e-3, 5e-4), seeds=(1, 2))
    summary = summarize_sweep(sweep(cfg, grid, return_state=True), cfg)
    assert summary["state"] == "Completed", summary.get("error")
    store = client(cfg)
    parent = summary["parent_run_id"]
    children = store.search_runs([store.get_run(parent).info.experiment_id],
                                 f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(children) == 4
    assert sorted((c.data.params["train.learning_rate"], c.data.params["train.seed"])
                  for c in children) == [("0.0005", "1"), ("0.0005", "2"),
                                         ("0.001", "1"), ("0.001", "2")]
    f1 = {(c.data.params["train.learning_rate"], c.data.params["train.seed"]):
          c.data.metrics["dev_f1"] for c in children}
    rows = {row["learning_rate"]: row for row in summary["settings"]}
    assert rows[1e-3]["seeds"] == 2
    assert rows[1e-3]["f1_mean"] == pytest.approx((f1["0.001", "1"] + f1["0.001", "2"]) / 2)
    assert store.get_run(parent).data.metrics["lr_0.001.dev_f1_mean"] == pytest.approx(
        rows[1e-3]["f1_mean"])
    assert store.get_run(parent).info.status == "FINISHED"
    assert summary["model"]["version"] == "3"  # one version for the whole sweep
    healthy = [c for c in children if c.data.tags["collapsed"] == "false"] or children
    assert summary["model"]["run_id"] in {c.info.run_id for c in healthy}
    assert summary["dev_metrics"]["f1"] == max(c.data.metrics["dev_f1"] for c in healthy)
    assert flow_artifact(summary["flow_run_id"], "sweep-summary").startswith("# Sweep (mrpc)")


def test_cli_run_json_then_predict_with_the_champion(tiny_sources, tmp_path):
    home = tmp_path / "home"
    args = ["run", "--source", tiny_sources.source,
            "--checkpoint", tiny_sources.checkpoint,
            "--max-seq-length", "32", "--epochs", "1", "--batch-size", "4", "--json"]
    config = tmp_path / "bounds.yaml"
    config.write_text("data:\n  row_bounds: {train: [1, 100], dev: [1, 100], test: [1, 100]}\n")
    result = run_bertflow([*args, "--config", str(config)], home)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["state"] == "Completed"
    assert list(summary["tasks"]) == FLOW_TASKS
    assert set(summary["dev_metrics"]) >= {"accuracy", "f1"}
    assert summary["model"]["version"] == "1" and "challenger" in summary["model"]["aliases"]
    assert (home / "mlflow" / "mlflow.db").is_file() and (home / "prefect").is_dir()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()

    # The champion, or the challenger when the tiny model collapsed and was not promoted.
    uri = [] if summary["model"]["promoted"] else \
        ["--model-uri", "models:/bertflow-mrpc@challenger"]
    pairs = "the company said its shares rose\tshares rose on monday\nprofit beat\tsales fell\n"
    predicted = run_bertflow(["predict", *uri], home, stdin=pairs)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = predicted.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        label, probability = line.split("\t")
        assert label in ("0", "1") and float(probability) >= 0.5  # that label's probability
