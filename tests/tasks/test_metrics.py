"""The evaluate stage's numbers, checked by hand: MRPC's metrics as before, many classes, string
labels, regression, metric keys MLflow accepts, and the collapse verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.metrics import (class_keys, classification_metrics, collapse_check, confusion,
                           metric_key, regression_collapse_check, regression_metrics)
from tests.tasks.eval_fixtures import LABELS, MRPC, PROBS


def mrpc_metrics(labels=LABELS, probs=PROBS):
    return classification_metrics(labels, probs, MRPC, positive=1)


def test_mrpc_metrics_on_a_hand_checked_example():
    m = mrpc_metrics()
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["recall"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))  # 2TP / (2TP + FP + FN)
    assert m["majority_baseline"] == pytest.approx(6 / 10)
    assert m["positive_share"] == pytest.approx(5 / 10)
    assert m["examples"] == 10
    # 21 of the 24 (positive, negative) pairs rank the positive higher.
    assert m["roc_auc"] == pytest.approx(21 / 24)
    p_true = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.45, 0.8, 0.9, 0.65]
    assert m["loss"] == pytest.approx(-np.mean(np.log(p_true)))
    assert confusion(LABELS, PROBS.argmax(axis=1)) == [[3, 1], [2, 4]]  # [[tn, fp], [fn, tp]]


def test_mrpc_gains_per_class_macro_f1_and_mcc():
    m = mrpc_metrics()
    tp, fn, fp, tn = 4, 2, 1, 3
    assert m["f1_1"] == m["f1"] and m["precision_1"] == m["precision"]
    assert m["precision_0"] == pytest.approx(tn / (tn + fn))  # 3 / 5
    assert m["recall_0"] == pytest.approx(tn / (tn + fp))  # 3 / 4
    f1_0 = 2 * tn / (2 * tn + fn + fp)
    assert m["f1_0"] == pytest.approx(f1_0)
    assert m["macro_f1"] == pytest.approx((f1_0 + m["f1"]) / 2)
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert m["mcc"] == pytest.approx(mcc)


def test_three_classes_with_string_labels():
    names = ("contradiction", "entailment", "neutral")
    labels = np.array([0, 0, 1, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 2, 2])
    m = classification_metrics(labels, np.eye(3)[predicted] * 0.8 + 0.2 / 3, names)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["majority_baseline"] == pytest.approx(3 / 6)
    assert m["recall_contradiction"] == pytest.approx(1 / 2)
    assert m["precision_entailment"] == pytest.approx(2 / 3)
    assert m["f1_neutral"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 0))
    per_class_f1 = [m[f"f1_{name}"] for name in names]
    assert m["macro_f1"] == pytest.approx(np.mean(per_class_f1))
    assert "f1" not in m and "roc_auc" not in m and "positive_share" not in m  # no positive class
    assert m["loss"] == pytest.approx(-np.log(0.8 + 0.2 / 3) * 4 / 6 - np.log(0.2 / 3) * 2 / 6)
    assert confusion(labels, predicted, num_labels=3) == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]


def test_rte_reports_the_entailment_class_first_in_logit_order():
    names = ("entailment", "not_entailment")
    labels = np.array([0, 0, 0, 1])  # three entailments
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    m = classification_metrics(labels, probs, names, positive=0)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["positive_share"] == pytest.approx(3 / 4)
    assert m["roc_auc"] == pytest.approx(1 / 3)  # 1 of 3 entailments above the other one
    assert m["f1_not_entailment"] == 0.0


def test_a_class_never_predicted_scores_zero_not_nan():
    m = classification_metrics([0, 1, 2], np.eye(3)[[0, 0, 0]], ("a", "b", "c"))
    assert m["precision_b"] == m["recall_b"] == m["f1_b"] == 0.0
    assert m["mcc"] == 0.0  # one class predicted: Matthews' correlation is 0


def test_one_class_dev_does_not_crash():
    labels = np.ones(4, int)
    probs = np.array([[0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.1, 0.9]])
    m = mrpc_metrics(labels, probs)
    assert math.isnan(m["roc_auc"])  # undefined with no negative example
    assert m["accuracy"] == 0.75 and m["majority_baseline"] == 1.0 and m["recall"] == 0.75
    assert collapse_check(m, probs.argmax(axis=1), 0.95) is not None


def test_regression_metrics_by_hand():
    truth = np.array([0.0, 1.0, 2.5, 4.0, 5.0])
    scores = np.array([0.5, 1.5, 2.0, 3.0, 4.8])
    m = regression_metrics(truth, scores)
    assert m["mse"] == m["loss"] == pytest.approx((0.25 + 0.25 + 0.25 + 1 + 0.04) / 5)
    assert m["mean_baseline_mse"] == pytest.approx(np.var(truth))  # always predicting 2.5
    assert m["spearman"] == pytest.approx(1.0)  # the same order
    t, s = truth - truth.mean(), scores - scores.mean()
    assert m["pearson"] == pytest.approx((t @ s) / math.sqrt((t @ t) * (s @ s)))
    assert m["examples"] == 5 and "accuracy" not in m


def test_a_constant_regressor_has_no_correlation_and_is_collapsed():
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    m = regression_metrics(truth, np.full(4, 2.5))  # dev's own mean: the best constant
    assert math.isnan(m["pearson"]) and math.isnan(m["spearman"])
    assert m["mse"] == pytest.approx(m["mean_baseline_mse"])
    assert regression_collapse_check(m) == ("mse 1.2500 does not beat the constant mean "
                                            "predictor's 1.2500")
    assert regression_collapse_check(regression_metrics(truth, truth + 0.1)) is None


def test_a_model_that_beats_the_baseline_is_not_collapsed():
    assert collapse_check(mrpc_metrics(), PROBS.argmax(axis=1), 0.95) is None


def test_a_constant_predictor_is_collapsed():
    probs = np.tile([0.3, 0.7], (10, 1))
    reason = collapse_check(mrpc_metrics(LABELS, probs), probs.argmax(axis=1), 0.95)
    assert "predicts label 1 for 100.0% of dev examples" in reason
    assert "does not beat the majority baseline 0.6000" in reason


def test_the_collapse_reason_names_the_class():
    labels = np.array([0, 1, 2, 2, 2, 2, 2, 2, 2, 2])
    probs = np.tile([0.1, 0.2, 0.7], (10, 1))
    m = classification_metrics(labels, probs, ("contradiction", "entailment", "neutral"))
    reason = collapse_check(m, probs.argmax(axis=1), 0.95, ("contradiction", "entailment",
                                                            "neutral"))
    assert reason.startswith("predicts label neutral for 100.0% of dev examples")


def test_mrpc_dev_at_exactly_the_baseline_is_collapsed():
    # MRPC dev: 279 of 408 pairs are paraphrases; always saying "paraphrase" scores 0.6838, as
    # google-research/bert's run from scratch did.
    labels = np.array([1] * 279 + [0] * 129)
    probs = np.tile([0.2, 0.8], (408, 1))
    m = mrpc_metrics(labels, probs)
    assert round(m["majority_baseline"], 4) == 0.6838 and m["accuracy"] == m["majority_baseline"]
    assert "accuracy 0.6838 does not beat the majority baseline 0.6838" in collapse_check(
        m, probs.argmax(axis=1), 0.95)


def test_mixed_predictions_at_the_baseline_are_collapsed():
    predictions = np.array([1, 1, 1, 1, 0, 0, 1, 1, 0, 0])  # 6 of 10 right, 60% positive
    probs = np.eye(2)[predictions]
    reason = collapse_check(mrpc_metrics(LABELS, probs), predictions, 0.95)
    assert reason == "accuracy 0.6000 does not beat the majority baseline 0.6000"


@pytest.mark.parametrize("label", ["entailment", "not_entailment", "très bon", "5 stars",
                                   "a/b", "a//b", "x/", "../up", "ü:é?", "", "a+b", "."])
def test_every_per_class_key_is_one_mlflow_accepts(label):
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_metric_name

    for metric in ("f1", "precision", "recall"):
        name = f"dev_{metric}_{metric_key(label)}"
        try:
            _validate_metric_name(name)
        except MlflowException as err:
            pytest.fail(f"{label!r} -> {name!r}: {err}")


def test_keys_keep_plain_names_and_part_clashing_ones():
    assert class_keys(("entailment", "not_entailment")) == ("entailment", "not_entailment")
    keys = class_keys(("good!", "good?", "bad"))
    assert len(set(keys)) == 3 and keys[2] == "bad"
    m = classification_metrics([0, 1, 2], np.eye(3), ("good!", "good?", "bad"))
    assert {f"f1_{key}" for key in keys} <= set(m)
