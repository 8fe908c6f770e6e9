"""The evaluate stage's numbers: the metrics of one labeled split, and the collapse verdict.

Flat keys, which MLflow logs as dev_<name>:

    classifier (probabilities (n, k), label ids)
      accuracy  macro_f1  mcc  loss (cross-entropy)  majority_baseline  examples
      precision_<label>  recall_<label>  f1_<label>   each class, its name made a metric key
      f1  precision  recall  roc_auc  positive_share  two classes: those of the positive class
    regressor (scores (n,), true scores)
      pearson  spearman  mse  loss (= mse)  mean_baseline_mse  examples

Both baselines are constant predictors fitted to the split itself: the majority baseline is the
share of its most frequent class, the mean baseline the MSE of always predicting its mean score
(its variance). A model that does not beat them has learned nothing: google-research/bert
fine-tuned from scratch scores exactly the majority baseline on MRPC dev (68.4%).
"""

from __future__ import annotations

import posixpath
import re
import warnings

import numpy as np
from scipy import stats
from sklearn import metrics as skm


def metric_key(label: str) -> str:
    """`label` as the end of an MLflow metric key: letters, digits, `_ - . /` and spaces kept,
    any other character `_` (and every `/`, if one would make the key a non-normal path).

    >>> metric_key("not_entailment"), metric_key("très bon!"), metric_key("yes/no")
    ('not_entailment', 'très bon_', 'yes/no')
    >>> metric_key("a//b"), metric_key("")
    ('a__b', '_')
    """
    key = re.sub(r"[^\w.\- /]", "_", label) or "_"
    if posixpath.normpath(f"f1_{key}") != f"f1_{key}":
        key = key.replace("/", "_")
    return key


def class_keys(labels: tuple[str, ...]) -> tuple[str, ...]:
    """`metric_key` of each label; names that would clash get their class index appended.

    >>> class_keys(("a+b", "a_b", "c"))
    ('a_b_0', 'a_b_1', 'c')
    """
    keys = [metric_key(label) for label in labels]
    return tuple(f"{key}_{i}" if keys.count(key) > 1 else key for i, key in enumerate(keys))


def classification_metrics(labels: np.ndarray, probs: np.ndarray, names: tuple[str, ...],
                           positive: int | None = None) -> dict[str, float]:
    """Accuracy; macro F1 (the mean F1 of every class in `names`); Matthews correlation; mean
    cross-entropy (probabilities clipped to the float64 epsilon); the majority baseline; the
    example count; per class precision, recall and F1 (0 where undefined); and with a
    `positive` class, its F1, precision, recall, ROC AUC (NaN if the split lacks a class) and
    the share of examples predicted positive.

    >>> m = classification_metrics([0, 1, 2, 2], np.eye(3)[[0, 2, 2, 2]], ("a", "b", "c"))
    >>> m["accuracy"], m["majority_baseline"], m["f1_b"], round(m["f1_c"], 2)
    (0.75, 0.5, 0.0, 0.8)
    """
    labels, probs = np.asarray(labels), np.asarray(probs, np.float64)
    classes = list(range(len(names)))
    predictions = probs.argmax(axis=1)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0)
    metrics = {
        "accuracy": float(skm.accuracy_score(labels, predictions)),
        "macro_f1": float(np.mean(f1)), "mcc": _mcc(labels, predictions),
        "loss": float(skm.log_loss(labels, probs, labels=classes)),
        "majority_baseline": float(np.bincount(labels, minlength=len(classes)).max()
                                   / len(labels)),
        "examples": float(len(labels)),
    }
    for key, p, r, f in zip(class_keys(names), precision, recall, f1):
        metrics |= {f"precision_{key}": float(p), f"recall_{key}": float(r), f"f1_{key}": float(f)}
    if positive is not None:
        metrics |= {"f1": float(f1[positive]), "precision": float(precision[positive]),
                    "recall": float(recall[positive]),
                    "roc_auc": _roc_auc(labels == positive, probs[:, positive]),
                    "positive_share": float(np.mean(predictions == positive))}
    return metrics


def _mcc(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Matthews correlation; 0 where it is undefined (one class predicted, or present)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(skm.matthews_corrcoef(labels, predictions))


def _roc_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of the positive class; NaN when the split holds one class."""
    if len(np.unique(is_positive)) < 2:
        return float("nan")
    return float(skm.roc_auc_score(is_positive, scores))


def correlation(kind: str, truth: np.ndarray, scores: np.ndarray) -> float:
    """Pearson's or Spearman's correlation; NaN when either side is constant or too short.

    >>> round(correlation("pearson", [1, 2, 3], [2, 4, 7]), 3)
    0.993
    >>> correlation("spearman", [1, 2, 3], [2, 4, 7])
    1.0
    >>> correlation("pearson", [1, 2, 3], [2, 2, 2])
    nan
    """
    truth, scores = np.asarray(truth, np.float64), np.asarray(scores, np.float64)
    if len(truth) < 2 or np.ptp(truth) == 0 or np.ptp(scores) == 0:
        return float("nan")
    test = {"pearson": stats.pearsonr, "spearman": stats.spearmanr}[kind]
    return float(test(truth, scores).statistic)


def regression_metrics(truth: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation of predicted with true scores, the mean squared error
    (also as `loss`), the MSE of always predicting the split's mean true score, the count.

    >>> m = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.5, 5.0])
    >>> m["mse"], m["mean_baseline_mse"], m["spearman"]
    (0.375, 1.25, 1.0)
    """
    truth, scores = np.asarray(truth, np.float64), np.asarray(scores, np.float64)
    mse = float(np.mean((scores - truth) ** 2))
    return {"pearson": correlation("pearson", truth, scores),
            "spearman": correlation("spearman", truth, scores), "mse": mse, "loss": mse,
            "mean_baseline_mse": float(np.mean((truth - truth.mean()) ** 2)),
            "examples": float(len(truth))}


def split_metrics(truth: np.ndarray, outputs: np.ndarray, labels: tuple[str, ...],
                  positive: int | None) -> dict[str, float]:
    """`regression_metrics` when there are no `labels`, else `classification_metrics`."""
    if not labels:
        return regression_metrics(truth, outputs)
    return classification_metrics(truth, outputs, labels, positive)


def confusion(labels: np.ndarray, predictions: np.ndarray, num_labels: int = 2) -> list[list[int]]:
    """Rows are true labels, columns predicted: [[tn, fp], [fn, tp]] for two labels.

    >>> confusion([0, 1, 1], [0, 0, 1])
    [[1, 0], [1, 1]]
    """
    matrix = skm.confusion_matrix(labels, predictions, labels=list(range(num_labels)))
    return [[int(n) for n in row] for row in matrix]


def collapse_check(metrics: dict[str, float], predictions: np.ndarray, collapse_share: float,
                   labels: tuple[str, ...] = ()) -> str | None:
    """Why a classifier counts as collapsed (one class, named from `labels`, for >=
    `collapse_share` of the split, or accuracy at or below the majority baseline); None when
    it is not.

    >>> collapse_check({"accuracy": 0.5, "majority_baseline": 0.5}, np.array([1, 1]), 0.95,
    ...                ("no", "yes")).split("; ")[0]
    'predicts label yes for 100.0% of dev examples (limit 95%)'
    """
    counts = np.bincount(np.asarray(predictions))
    share, top = counts.max() / counts.sum(), int(counts.argmax())
    reasons = []
    if share >= collapse_share:
        reasons.append(f"predicts label {labels[top] if labels else top} for {share:.1%} of dev "
                       f"examples (limit {collapse_share:.0%})")
    accuracy, baseline = metrics["accuracy"], metrics["majority_baseline"]
    if accuracy <= baseline + 1e-12:
        reasons.append(f"accuracy {accuracy:.4f} does not beat the majority baseline "
                       f"{baseline:.4f}")
    return "; ".join(reasons) or None


def regression_collapse_check(metrics: dict[str, float]) -> str | None:
    """Why a regressor counts as collapsed (its MSE at or above that of always predicting the
    mean score, as any constant predictor's is); None when it is not.

    >>> regression_collapse_check({"mse": 1.5, "mean_baseline_mse": 1.25})
    "mse 1.5000 does not beat the constant mean predictor's 1.2500"
    """
    mse, baseline = metrics["mse"], metrics["mean_baseline_mse"]
    if mse >= baseline - 1e-12:
        return f"mse {mse:.4f} does not beat the constant mean predictor's {baseline:.4f}"
    return None
