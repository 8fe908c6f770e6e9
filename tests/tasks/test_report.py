"""The evaluate stage's text files byte for byte (run_classifier's and GLUE's formats, the
predictions), and summary.md for MRPC, MNLI's two dev splits and STS-B's regression."""

from __future__ import annotations

import numpy as np

from tasks.metrics import classification_metrics, regression_metrics
from tasks.report import (metrics_line, summary_markdown, write_glue_submission,
                          write_predictions, write_test_results)
from tests.tasks.eval_fixtures import HISTORY, LABELS, MRPC, NLI, PROBS


def test_test_results_and_glue_submission_byte_exact(tmp_path):
    probs = np.array([[0.25, 0.75], [0.5, 0.5], [0.875, 0.125]])
    write_test_results(probs, tmp_path / "test_results.tsv")
    write_glue_submission(probs, ("0", "1"), tmp_path / "MRPC.tsv")
    assert (tmp_path / "test_results.tsv").read_bytes() == b"0.25\t0.75\n0.5\t0.5\n0.875\t0.125\n"
    assert (tmp_path / "MRPC.tsv").read_bytes() == b"index\tprediction\n0\t1\n1\t0\n2\t0\n"


def test_test_results_write_float32_as_run_classifier_did(tmp_path):
    write_test_results(np.array([[0.1, 0.9]]), tmp_path / "t.tsv")
    assert (tmp_path / "t.tsv").read_text() == "0.1\t0.9\n"  # not 0.10000000149011612


def test_a_submission_names_the_labels(tmp_path):
    probs = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    write_glue_submission(probs, NLI, tmp_path / "MNLI-m.tsv")
    assert (tmp_path / "MNLI-m.tsv").read_text().splitlines() == [
        "index\tprediction", "0\tneutral", "1\tcontradiction", "2\tentailment"]


def test_a_regression_submission_writes_scores_with_three_decimals(tmp_path):
    scores = np.array([3.14159, 0.0, 4.9996, -0.25])
    write_glue_submission(scores, (), tmp_path / "STS-B.tsv")
    write_test_results(scores, tmp_path / "test_results.tsv")
    assert (tmp_path / "STS-B.tsv").read_text() == ("index\tprediction\n0\t3.142\n1\t0.000\n"
                                                     "2\t5.000\n3\t-0.250\n")
    assert (tmp_path / "test_results.tsv").read_text() == "3.14159\n0.0\n4.9996\n-0.25\n"


def test_dev_predictions_of_mrpc(tmp_path):
    write_predictions(["dev-1", "dev-2"], np.array([1, 0]), PROBS[6:8].copy(), MRPC,
                      tmp_path / "dev.tsv")
    assert (tmp_path / "dev.tsv").read_text().splitlines() == [
        "guid\tlabel\tp_0\tp_1\tprediction", "dev-1\t1\t0.450000\t0.550000\t1",
        "dev-2\t0\t0.800000\t0.200000\t0"]


def test_dev_predictions_name_the_labels(tmp_path):
    write_predictions(["a", "b"], np.array([2, 0]), np.array([[0.1, 0.2, 0.7], [0.2, 0.5, 0.3]]),
                      NLI, tmp_path / "dev.tsv")
    assert (tmp_path / "dev.tsv").read_text().splitlines() == [
        "guid\tlabel\tp_contradiction\tp_entailment\tp_neutral\tprediction",
        "a\tneutral\t0.100000\t0.200000\t0.700000\tneutral",
        "b\tcontradiction\t0.200000\t0.500000\t0.300000\tentailment"]


def test_dev_predictions_of_a_regressor(tmp_path):
    write_predictions(["dev-1", "dev-2"], np.array([3.8, 0.5], np.float32), np.array([3.51, 1.0]),
                      (), tmp_path / "dev.tsv")
    assert (tmp_path / "dev.tsv").read_text().splitlines() == [
        "guid\tlabel\tscore", "dev-1\t3.8\t3.510000", "dev-2\t0.5\t1.000000"]


def test_mrpc_summary():
    m = classification_metrics(LABELS, PROBS, MRPC, positive=1)
    text = summary_markdown("mrpc", {"dev": m}, [[3, 1], [2, 4]], None, HISTORY, MRPC)
    assert text.startswith("# mrpc evaluation\n\nDev: 10 examples.\n")
    assert "| metric | dev | majority baseline |" in text
    assert "| accuracy | 0.7000 | 0.6000 |" in text and "| f1 | 0.7273 |  |" in text
    assert "| mcc | 0.4082 |  |" in text and "| positive_share | 0.5000 |  |" in text
    assert "| 1 | 0.8000 | 0.6667 | 0.7273 | 6 |" in text  # per class: p, r, f1, examples
    assert "| 0 | 3 | 1 |" in text and "| 1 | 2 | 4 |" in text
    assert "4 steps in 2 epochs, 55.0 examples/s." in text and "Warning" not in text
    warned = summary_markdown("mrpc", {"dev": m}, [[3, 1], [2, 4]],
                              "predicts label 1 for 99.0% of dev examples", HISTORY)
    assert "**Warning: collapsed model:** predicts label 1 for 99.0% of dev examples." in warned


def test_mnli_summary_has_a_column_pair_per_dev_split():
    truth = np.array([0, 1, 2, 2])
    matched = classification_metrics(truth, np.eye(3)[[0, 1, 2, 1]], NLI)
    mismatched = classification_metrics(truth, np.eye(3)[[0, 0, 0, 0]], NLI)
    text = summary_markdown("mnli", {"dev": matched, "dev_mismatched": mismatched},
                            [[1, 0, 0], [0, 1, 0], [0, 1, 1]], None, HISTORY, NLI)
    assert "Dev: 4 examples; dev_mismatched: 4 examples." in text
    assert ("| metric | dev | majority baseline | dev_mismatched | majority baseline |"
            in text)
    assert "| accuracy | 0.7500 | 0.5000 | 0.2500 | 0.5000 |" in text
    assert "\n| f1 |" not in text and "roc_auc" not in text  # no positive class
    assert "| neutral | 1.0000 | 0.5000 | 0.6667 | 2 |" in text
    assert "| true \\ predicted | contradiction | entailment | neutral |" in text


def test_regression_summary():
    m = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.5, 5.0]))
    text = summary_markdown("stsb", {"dev": m}, [], None, HISTORY)
    assert text.startswith("# stsb evaluation\n")
    assert "| metric | dev | mean baseline |" in text
    assert "| mse | 0.3750 | 1.2500 |" in text and "| spearman | 1.0000 |  |" in text
    assert "accuracy" not in text and "Confusion" not in text and "Per class" not in text


def test_the_logged_line():
    m = classification_metrics(LABELS, PROBS, MRPC, positive=1)
    line = metrics_line("dev", m)
    assert line.startswith("dev accuracy 0.7000 (majority baseline 0.6000), macro_f1 ")
    assert ", f1 0.7273, roc_auc 0.8750, loss " in line and line.endswith(" on 10 examples")
