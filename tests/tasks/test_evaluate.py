"""The evaluate stage end to end, the report folder a user opens: MRPC over the project's own
download and tokenize code; CoLA-, RTE-, MNLI-, STS-B- and custom-shaped tasks over shards written
to the manifest contract (tests/tasks/eval_fixtures.py); and its failure modes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats

from tasks.config import EvalConfig, ModelConfig
from tasks.evaluate import eval_plan, evaluate_model
from tasks.fingerprint import SEAL
from tasks.records import Shards, TrainedModel
from tests.tasks.eval_fixtures import (NLI, STANDARD, assert_real_png, tiny_model, write_cola,
                                       write_contract_shards)

MRPC_FILES = {"metrics.json", "dev_predictions.tsv", "test_results.tsv", "MRPC.tsv",
              "confusion_matrix.png", "roc_curve.png", "pr_curve.png", "loss_curve.png",
              "summary.md"}


@pytest.fixture(scope="module")
def cola(tmp_path_factory):
    return write_cola(tmp_path_factory.mktemp("cola"))


@pytest.fixture(scope="module")
def mrpc(tiny_sources, tmp_path_factory):
    """Real shards from the project's own download and tokenize code."""
    from tasks.download import download_data
    from tasks.tokenize import tokenize_splits

    root = tmp_path_factory.mktemp("mrpc")
    raw = download_data(tiny_sources, root / "home")
    shards = tokenize_splits(raw, tiny_sources, ModelConfig(max_seq_length=32), root / "home")
    return tiny_model(root / "model", ("0", "1")), shards


def read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_the_plan_reads_the_manifest():
    manifest = {"task": "mnli", "labels": list(NLI), "positive": None,
                "submission": {"test": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
                "splits": {"train": {"role": "train", "labeled": True},
                           "dev_mismatched": {"role": "eval", "labeled": True},
                           "dev": {"role": "eval", "labeled": True},
                           "test_mismatched": {"role": "test", "labeled": False},
                           "test": {"role": "test", "labeled": False}}}
    plan = eval_plan(manifest)
    assert plan.evals == ("dev", "dev_mismatched") and plan.tests == ("test", "test_mismatched")
    assert plan.positive is None and not plan.regression
    assert [plan.results_file(s) for s in plan.tests] == ["test_results.tsv",
                                                          "test_results_test_mismatched.tsv"]
    custom = {**manifest, "labels": ["good", "bad"], "positive": "bad", "splits": {
        "train": {"role": "train", "labeled": True}, "dev": {"role": "eval", "labeled": True}}}
    assert eval_plan(custom).positive == 1 and eval_plan(custom).tests == ()
    no_dev = {**manifest, "splits": {"train": {"role": "train", "labeled": True}}}
    with pytest.raises(ValueError, match="no labeled dev split"):
        eval_plan(no_dev)


def test_mrpc_writes_the_whole_report_once(mrpc, tmp_path):
    trained, shards = mrpc
    out = tmp_path / "reports" / "abc"
    report = evaluate_model(trained, shards, EvalConfig(batch_size=4), out)

    assert report.report_dir == str(out)
    assert {p.name for p in out.iterdir()} == MRPC_FILES | {SEAL}  # sealed: whole
    assert [p.name for p in out.parent.iterdir()] == ["abc"]  # no temp folder left beside it
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == {"metrics": report.metrics, "confusion_matrix": report.confusion_matrix,
                     "collapsed": report.collapsed, "collapse_reason": report.collapse_reason,
                     "splits": {}}
    assert report.collapsed == (report.collapse_reason is not None)
    assert {"accuracy", "f1", "precision", "recall", "roc_auc", "loss", "majority_baseline",
            "positive_share", "examples", "macro_f1", "mcc", "f1_0", "f1_1"} <= set(report.metrics)
    dev = read_tsv(out / "dev_predictions.tsv")
    assert dev[0] == ["guid", "label", "p_0", "p_1", "prediction"]
    rows = shards.rows["dev"]
    assert [r[0] for r in dev[1:]] == [f"dev-{i}" for i in range(1, rows + 1)]  # manifest order
    assert report.metrics["examples"] == rows and sum(map(sum, report.confusion_matrix)) == rows
    test_lines = (out / "test_results.tsv").read_text().splitlines()
    assert len(test_lines) == shards.rows["test"] == 8
    assert all(sum(map(float, line.split("\t"))) == pytest.approx(1, abs=1e-6)
               for line in test_lines)
    glue = (out / "MRPC.tsv").read_text().splitlines()
    assert glue[0] == "index\tprediction" and len(glue) == 1 + shards.rows["test"]
    assert (out / "summary.md").read_text().startswith("# mrpc evaluation\n")
    for name in ("confusion_matrix.png", "roc_curve.png", "pr_curve.png", "loss_curve.png"):
        assert_real_png(out / name)

    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = evaluate_model(trained, shards, EvalConfig(batch_size=4), out)
    assert again == report
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # nothing rewritten


def test_a_binary_task_names_its_submission_from_the_manifest(cola, tmp_path):
    trained, shards = cola
    report = evaluate_model(trained, shards, EvalConfig(batch_size=4), tmp_path / "r")
    out = Path(report.report_dir)
    assert {p.name for p in out.iterdir()} == (MRPC_FILES - {"MRPC.tsv"}) | {"CoLA.tsv", SEAL}
    assert (out / "summary.md").read_text().startswith("# cola evaluation\n")
    dev = read_tsv(out / "dev_predictions.tsv")[1:]
    truth = [int(row[1]) for row in dev]
    predicted = [int(row[4]) for row in dev]
    from sklearn.metrics import matthews_corrcoef
    assert report.metrics["mcc"] == pytest.approx(matthews_corrcoef(truth, predicted))
    assert report.metrics["accuracy"] == pytest.approx(np.mean(np.equal(truth, predicted)))


def test_rte_string_labels_and_the_entailment_class(tmp_path):
    labels = ("entailment", "not_entailment")
    shards = write_contract_shards(tmp_path / "shards", "rte", labels, STANDARD,
                                   positive="entailment", submission={"test": "RTE.tsv"}, seed=3)
    trained = tiny_model(tmp_path / "model", labels, seed=3)
    report = evaluate_model(trained, shards, EvalConfig(batch_size=4), tmp_path / "r")
    out = Path(report.report_dir)
    dev = read_tsv(out / "dev_predictions.tsv")
    assert dev[0] == ["guid", "label", "p_entailment", "p_not_entailment", "prediction"]
    assert {row[1] for row in dev[1:]} <= set(labels) and {row[4] for row in dev[1:]} <= set(labels)
    entailed = [row[4] == "entailment" for row in dev[1:]]
    assert report.metrics["positive_share"] == pytest.approx(np.mean(entailed))
    assert {"f1_entailment", "f1_not_entailment"} <= set(report.metrics)
    assert {line.split("\t")[1] for line in (out / "RTE.tsv").read_text().splitlines()[1:]} \
        <= set(labels)


def test_mnli_evaluates_both_dev_splits_and_predicts_both_test_splits(tmp_path):
    splits = {"train": ("train", 12), "dev": ("eval", 9), "dev_mismatched": ("eval", 7),
              "test": ("test", 6), "test_mismatched": ("test", 5)}
    shards = write_contract_shards(
        tmp_path / "shards", "mnli", NLI, splits, seed=1,
        submission={"test": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"})
    trained = tiny_model(tmp_path / "model", NLI, seed=1)
    report = evaluate_model(trained, shards, EvalConfig(batch_size=4), tmp_path / "r")
    out = Path(report.report_dir)
    assert {p.name for p in out.iterdir()} == {
        "metrics.json", "dev_predictions.tsv", "dev_mismatched_predictions.tsv",
        "test_results.tsv", "test_results_test_mismatched.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
        "confusion_matrix.png", "loss_curve.png", "summary.md", SEAL}  # no ROC/PR: 3 classes
    assert report.metrics["examples"] == 9 and list(report.splits) == ["dev_mismatched"]
    mismatched = report.splits["dev_mismatched"]
    assert mismatched["examples"] == 7 and {"accuracy", "macro_f1", "mcc"} <= set(mismatched)
    assert len(report.confusion_matrix) == 3 and sum(map(sum, report.confusion_matrix)) == 9
    assert len((out / "MNLI-mm.tsv").read_text().splitlines()) == 1 + 5
    assert len(read_tsv(out / "test_results_test_mismatched.tsv")[0]) == 3  # 3 probabilities
    rows = read_tsv(out / "dev_mismatched_predictions.tsv")[1:]
    right = [row[1] == row[5] for row in rows]
    assert mismatched["accuracy"] == pytest.approx(np.mean(right))
    assert "| metric | dev | majority baseline | dev_mismatched | majority baseline |" in \
        (out / "summary.md").read_text()


def test_stsb_regression_scores_pearson_spearman_and_a_scatter(tmp_path):
    shards = write_contract_shards(tmp_path / "shards", "stsb", (), STANDARD, seed=2,
                                   submission={"test": "STS-B.tsv"})
    written = pq.read_table(tmp_path / "shards" / "dev-00000.parquet")["label"].to_pylist()
    trained = tiny_model(tmp_path / "model", (), spread=1e4)
    report = evaluate_model(trained, shards, EvalConfig(batch_size=4), tmp_path / "r")
    out = Path(report.report_dir)
    assert {p.name for p in out.iterdir()} == {
        "metrics.json", "dev_predictions.tsv", "test_results.tsv", "STS-B.tsv", "scatter.png",
        "loss_curve.png", "summary.md", SEAL}
    assert report.confusion_matrix == [] and "accuracy" not in report.metrics
    dev = read_tsv(out / "dev_predictions.tsv")
    assert dev[0] == ["guid", "label", "score"]
    truth, scores = (np.array([float(row[i]) for row in dev[1:]]) for i in (1, 2))
    np.testing.assert_allclose(truth[:4], written, rtol=1e-6)  # true scores, not truncated
    assert report.metrics["pearson"] == pytest.approx(stats.pearsonr(truth, scores)[0], abs=1e-4)
    assert report.metrics["mse"] == pytest.approx(np.mean((truth - scores) ** 2), abs=1e-4)
    assert report.metrics["mean_baseline_mse"] == pytest.approx(np.var(truth), rel=1e-4)
    # An untrained regressor does not beat always predicting dev's mean.
    assert report.collapsed and "constant mean predictor" in report.collapse_reason
    submission = read_tsv(out / "STS-B.tsv")
    assert len(submission) == 9 and all(len(row[1].split(".")[1]) == 3 for row in submission[1:])
    assert_real_png(out / "scatter.png")
    assert (out / "summary.md").read_text().startswith("# stsb evaluation\n")


def test_a_custom_task_without_a_glue_name_writes_no_submission(tmp_path):
    labels = ("bad", "good", "great!")
    shards = write_contract_shards(tmp_path / "shards", "custom", labels, STANDARD, seed=4)
    report = evaluate_model(tiny_model(tmp_path / "model", labels, seed=4), shards,
                            EvalConfig(batch_size=4), tmp_path / "r")
    assert {p.name for p in Path(report.report_dir).iterdir()} == {
        "metrics.json", "dev_predictions.tsv", "test_results.tsv", "confusion_matrix.png",
        "loss_curve.png", "summary.md", SEAL}
    assert "f1_great_" in report.metrics  # the name made a metric key


@pytest.mark.usefixtures("prefect_api")
def test_the_task_shows_a_table_in_the_prefect_ui(tmp_path):
    """A classifier's dev confusion matrix under its label names; a regressor's metrics, with a
    column per evaluation split."""
    from prefect import flow

    from tasks.evaluate import evaluate
    from tests.artifacts import flow_artifact

    @flow
    def run(trained: TrainedModel, shards: Shards) -> tuple[str, dict]:
        from prefect.runtime import flow_run

        report = evaluate(trained, shards, EvalConfig(batch_size=4), str(tmp_path / "home"))
        return flow_run.id, report.metrics

    splits = {**STANDARD, "dev_other": ("eval", 5)}
    stsb = write_contract_shards(tmp_path / "stsb", "stsb", (), splits, seed=5)
    flow_run_id, metrics = run(tiny_model(tmp_path / "stsb-model", (), spread=1e4), stsb)
    rows = {row["metric"]: row for row in flow_artifact(flow_run_id, "dev-metrics")}
    assert rows["pearson"]["dev"] == pytest.approx(metrics["pearson"])
    assert rows["examples"]["dev"] == 13 and rows["examples"]["dev_other"] == 5
    mnli = write_contract_shards(tmp_path / "mnli", "mnli", NLI, STANDARD, seed=6)
    flow_run_id, _ = run(tiny_model(tmp_path / "mnli-model", NLI, seed=6), mnli)
    confusion = flow_artifact(flow_run_id, "confusion-matrix")
    assert [row["true"] for row in confusion] == list(NLI)
    assert sum(row[f"predicted {label}"] for row in confusion for label in NLI) == 13


def test_a_model_of_other_labels_is_refused(cola, tmp_path):
    _, shards = cola
    trained = tiny_model(tmp_path / "model", NLI)
    with pytest.raises(ValueError, match=r"predicts labels \('contradiction'"):
        evaluate_model(trained, shards, EvalConfig(batch_size=4), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_classifier_on_a_regression_task_is_refused(tmp_path):
    shards = write_contract_shards(tmp_path / "shards", "stsb", (), STANDARD)
    trained = tiny_model(tmp_path / "model", (), outputs=2)
    with pytest.raises(ValueError, match="the model outputs 2 values an example"):
        evaluate_model(trained, shards, EvalConfig(batch_size=4), tmp_path / "r")


def test_a_report_that_fails_halfway_leaves_nothing(cola, tmp_path):
    trained, shards = cola
    broken = tmp_path / "model"
    shutil.copytree(trained.model_dir, broken)
    (broken / "history.json").write_text("{}")  # the loss plot finds no steps
    out = tmp_path / "reports" / "abc"
    with pytest.raises(KeyError):
        evaluate_model(trained.model_copy(update={"model_dir": str(broken)}), shards,
                       EvalConfig(batch_size=4), out)
    assert list(out.parent.iterdir()) == []  # neither the report nor its temp folder
