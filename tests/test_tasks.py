"""Every built-in task end to end on generated files in its release layout, and a user's own CSV,
JSON Lines and Parquet files with a column mapping: real Prefect, GX, TensorFlow and MLflow,
a tiny BERT."""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from data_contracts.specs import TaskConfig
from flows.finetune import finetune
from flows.summary import summarize
from tasks.config import DataConfig, ModelConfig, PipelineConfig, RowBounds, TrainConfig
from tasks.mlflow_store import tracking_uri
from tasks.serving import load_model
from tests.fixtures import run_bertflow, write_release_zip
from tests.task_files import custom_rows, write_custom, write_task_files

pytestmark = pytest.mark.usefixtures("prefect_api")
BOUNDS = RowBounds(train=(1, 100), dev=(1, 100), test=(1, 100))


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return write_release_zip(tmp_path_factory.mktemp("release") / "tiny.zip")


def pipeline(home: Path, release: Path, task: TaskConfig, source: Path | None = None):
    return PipelineConfig(home=str(home), task=task,
                          data=DataConfig(source=str(source) if source else None,
                                          checkpoint=str(release), row_bounds=BOUNDS),
                          model=ModelConfig(max_seq_length=32),
                          train=TrainConfig(epochs=2, batch_size=4, learning_rate=1e-3))


def run(cfg: PipelineConfig) -> dict:
    summary = summarize(finetune(cfg, return_state=True), cfg)
    assert summary["state"] == "Completed", summary.get("error")
    return summary


def mlflow_run(cfg: PipelineConfig, summary: dict):
    client = mlflow.MlflowClient(tracking_uri(cfg.registry, Path(cfg.home)))
    return client.get_run(summary["model"]["run_id"])


def report_dir(cfg: PipelineConfig) -> Path:
    [folder] = [p.parent for p in Path(cfg.home, "reports").glob("*/metrics.json")]
    return folder


def classify(cfg: PipelineConfig, texts: list[tuple[str, ...]]) -> pd.DataFrame:
    registry = cfg.registry_for_task  # the challenger: a tiny model on random labels may collapse
    model = load_model(f"models:/{registry.model_name}@challenger", Path(cfg.home), registry)
    columns = ["text_a", "text_b"][:len(texts[0])]
    return model.predict(pd.DataFrame(texts, columns=columns))


# task -> (the dev metric that promotes, the GLUE submission files, the label names)
BUILT_IN = {
    "cola": ("mcc", ["CoLA.tsv"], {"0", "1"}),
    "sst2": ("accuracy", ["SST-2.tsv"], {"0", "1"}),
    "rte": ("accuracy", ["RTE.tsv"], {"entailment", "not_entailment"}),
    "stsb": ("pearson", ["STS-B.tsv"], None),
    "mnli": ("accuracy", ["MNLI-m.tsv", "MNLI-mm.tsv"],
             {"contradiction", "entailment", "neutral"}),
    "xnli": ("accuracy", [], {"contradiction", "entailment", "neutral"}),
}


@pytest.mark.parametrize("task", sorted(BUILT_IN))
def test_built_in_task_end_to_end(task, tmp_path, release):
    metric, submissions, labels = BUILT_IN[task]
    cfg = pipeline(tmp_path / "home", release, TaskConfig(name=task),
                   write_task_files(task, tmp_path / task))
    summary = run(cfg)
    assert summary["model"]["name"] == f"bertflow-{task}"
    assert summary["model"]["metric"] == metric
    logged = mlflow_run(cfg, summary)
    assert f"dev_{metric}" in logged.data.metrics and logged.data.tags["task"] == task
    folder = report_dir(cfg)
    assert sorted(p.name for p in folder.glob("*.tsv") if p.name[0].isupper()) == submissions
    pair = task not in ("cola", "sst2")
    out = classify(cfg, [("the company said its shares rose .", "analysts expected sales .")
                         [:2 if pair else 1]])
    if labels is None:
        assert list(out.columns) == ["score", "model_version"]
    else:
        assert out["label"].iloc[0] in labels
        assert {f"probability_{label}" for label in labels} <= set(out.columns)
    assert out["model_version"].iloc[0] == f"bertflow-{task}/1"


def test_mnli_scores_matched_and_mismatched_dev(tmp_path, release):
    cfg = pipeline(tmp_path / "home", release, TaskConfig(name="mnli"),
                   write_task_files("mnli", tmp_path / "mnli"))
    metrics = mlflow_run(cfg, run(cfg)).data.metrics
    assert {"dev_accuracy", "dev_mismatched_accuracy"} <= set(metrics)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_custom_files_with_a_column_mapping_and_string_labels(fmt, tmp_path, release):
    rows = custom_rows(36)
    task = TaskConfig(name="custom", train=str(write_custom(tmp_path / f"t.{fmt}", rows, fmt)),
                      dev=str(write_custom(tmp_path / f"d.{fmt}", custom_rows(12, seed=1), fmt)),
                      text_a="review", text_b="summary", label="stars", id="id")
    cfg = pipeline(tmp_path / "home", release, task)
    summary = run(cfg)
    assert summary["model"]["name"] == "bertflow-custom"
    predictions = pd.read_csv(report_dir(cfg) / "dev_predictions.tsv", sep="\t",
                              quoting=csv.QUOTE_NONE)
    assert set(predictions["prediction"]) <= {"negative", "positive"}
    assert predictions["guid"].tolist()[:2] == ["ex0", "ex1"]


def test_custom_run_without_dev_splits_train_the_same_way_every_time(tmp_path, release):
    train = write_custom(tmp_path / "train.csv", custom_rows(40), "csv")
    task = TaskConfig(name="custom", train=str(train), text_a="review", label="stars")
    guids = []
    for home in ("one", "two"):
        cfg = pipeline(tmp_path / home, release, task)
        logged = mlflow_run(cfg, run(cfg))
        assert logged.data.params["task.dev_fraction"] == "0.1"
        assert logged.data.params["task.split_seed"] == "12345"
        dev = pd.read_csv(report_dir(cfg) / "dev_predictions.tsv", sep="\t")
        guids.append(dev["guid"].tolist())
    assert guids[0] == guids[1] and len(guids[0]) == 4
    assert all(g.startswith("train-") for g in guids[0])  # dev rows name their train row


def test_cli_runs_a_custom_csv_and_predicts_label_names(tmp_path, release):
    train = write_custom(tmp_path / "reviews.csv", custom_rows(40), "csv")
    home = tmp_path / "home"
    bounds = tmp_path / "bounds.yaml"
    bounds.write_text("data:\n  row_bounds: {train: [1, 100], dev: [1, 100], test: [1, 100]}\n")
    done = run_bertflow(["run", "--task", "custom", "--train", str(train), "--text-a", "review",
                         "--text-b", "summary", "--label", "stars", "--checkpoint", str(release),
                         "--max-seq-length", "32", "--epochs", "1", "--batch-size", "4",
                         "--config", str(bounds)], home)
    assert done.returncode == 0, done.stderr
    predicted = run_bertflow(["predict", "--model-uri", "models:/bertflow-custom@challenger"], home,
                             stdin="the company said its shares rose .\tprofit beat forecasts .\n")
    assert predicted.returncode == 0, predicted.stderr
    label, probability = predicted.stdout.strip().split("\t")
    assert label in {"negative", "positive"} and 0.5 <= float(probability) <= 1.0


def test_cli_rejects_a_broken_csv_naming_line_and_rule(tmp_path, release):
    train = tmp_path / "reviews.csv"
    train.write_text('review,stars\n"fine",positive\n"never closed,negative\n')
    done = run_bertflow(["run", "--task", "custom", "--train", str(train), "--text-a", "review",
                         "--label", "stars", "--checkpoint", str(release)], tmp_path / "home")
    assert done.returncode == 1
    assert f"error: {train}, line 3: csv quoting: unexpected end of data" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def served_drop(server, name: str, rows: list[dict]) -> None:
    """A drop of a custom task's CSV on the loopback server, then LATEST naming it."""
    server.add(f"/drops/{name}/reviews.csv",
               pd.DataFrame(rows).to_csv(index=False).encode())
    server.add("/drops/LATEST", f"{name}\n".encode())


def test_custom_drops_over_http_with_a_pinned_evaluation_set(tmp_path, release):
    from tests.loopback import LoopbackServer

    server = LoopbackServer().start()
    try:
        exam = server.add("/exam/reviews-dev.csv",
                          pd.DataFrame(custom_rows(10, seed=7)).to_csv(index=False).encode())
        task = TaskConfig(name="custom", train="reviews.csv", text_a="review", text_b="summary",
                          label="stars", id="id")
        cfg = pipeline(tmp_path / "home", release, task)
        cfg = cfg.model_copy(update={
            "data": cfg.data.model_copy(update={"drops": f"{server.url}/drops"}),
            "registry": cfg.registry.model_copy(update={"eval_set": exam})})
        served_drop(server, "2026-11-23", custom_rows(36, seed=1))
        first = mlflow_run(cfg, run(cfg))
        served_drop(server, "2026-11-30", custom_rows(40, seed=2))
        second = mlflow_run(cfg, run(cfg))
    finally:
        server.stop()
    assert (first.data.tags["drop"], second.data.tags["drop"]) == ("2026-11-23", "2026-11-30")
    assert first.data.tags["sha256.train.csv"] != second.data.tags["sha256.train.csv"]
    assert "/drops/2026-11-30/reviews.csv" in server.requests
    assert first.data.params["task.train"] == "reviews.csv"  # the config as given
    client = mlflow.MlflowClient(tracking_uri(cfg.registry, Path(cfg.home)))
    versions = {v.run_id: v.tags for v in client.search_model_versions("name='bertflow-custom'")}
    # both versions faced the exam, not a share of their drop's train
    assert [versions[r.info.run_id]["gate.examples"] for r in (first, second)] == ["10", "10"]
    assert versions[second.info.run_id]["drop"] == "2026-11-30"
