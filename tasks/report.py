"""The evaluate stage's text files, from predictions and metrics:

    test_results.tsv         run_classifier's: per example its class probabilities (a regressor:
                             its score), no header
    CoLA.tsv, MNLI-m.tsv...  GLUE's submission: index, the predicted label name (a regressor: the
                             score with 3 decimals)
    dev_predictions.tsv      guid, label, p_<label> per class, prediction (label names); a
                             regressor: guid, label, score
    summary.md               the metrics of every labeled split, per class, confusion, training

and the one-line digest of a split's metrics that the task logs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.metrics import class_keys

CLASSIFIER_ROWS = ("accuracy", "macro_f1", "mcc", "f1", "precision", "recall", "roc_auc", "loss",
                   "positive_share")  # those a split has (f1... positive_share: two classes)
REGRESSOR_ROWS = ("pearson", "spearman", "mse")
BASELINES = {"accuracy": ("majority_baseline", "majority baseline"),
             "mse": ("mean_baseline_mse", "mean baseline")}  # metric -> its baseline: key, name
LOGGED = ("accuracy", "macro_f1", "mcc", "f1", "roc_auc", "loss")  # a classifier's, in the log


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_bytes("".join(line + "\n" for line in lines).encode())
    return path


def write_test_results(outputs: np.ndarray, path: Path) -> Path:
    """run_classifier's test_results.tsv: per example its class probabilities (or its one score)
    as str of float32, as run_classifier wrote them, tab-separated; no header."""
    rows = np.asarray(outputs, np.float32).reshape(len(outputs), -1)
    return _write_lines(path, ["\t".join(str(p) for p in row) for row in rows])


def write_glue_submission(outputs: np.ndarray, labels: tuple[str, ...], path: Path) -> Path:
    """GLUE's submission file: `index<TAB>prediction`, the label name of each argmax or, with no
    `labels` (regression), the score to 3 decimals."""
    if labels:
        predictions = [labels[k] for k in np.asarray(outputs).argmax(axis=1)]
    else:
        predictions = [f"{score:.3f}" for score in np.asarray(outputs, np.float64)]
    return _write_lines(path, ["index\tprediction",
                               *(f"{i}\t{p}" for i, p in enumerate(predictions))])


def write_predictions(guids: list[str], truth: np.ndarray, outputs: np.ndarray,
                      labels: tuple[str, ...], path: Path) -> Path:
    """One row per example of a labeled split: guid, true label name, p_<label> for each class
    and the predicted label name; with no `labels` (regression): guid, true score, score."""
    if not labels:
        rows = (f"{g}\t{np.float32(y)!s}\t{s:.6f}" for g, y, s in zip(guids, truth, outputs))
        return _write_lines(path, ["guid\tlabel\tscore", *rows])
    header = "\t".join(["guid", "label", *(f"p_{label}" for label in labels), "prediction"])
    rows = ("\t".join([g, labels[y], *(f"{p:.6f}" for p in probs), labels[int(probs.argmax())]])
            for g, y, probs in zip(guids, truth, np.asarray(outputs)))
    return _write_lines(path, [header, *rows])


def _regression(metrics: dict[str, float]) -> bool:
    return "mean_baseline_mse" in metrics


def metrics_line(split: str, metrics: dict[str, float]) -> str:
    """A split's headline numbers, baselines beside the metrics they bound.

    >>> metrics_line("dev", {"pearson": 0.8, "spearman": 0.75, "mse": 0.5,
    ...                      "mean_baseline_mse": 2.0, "examples": 9.0})
    'dev pearson 0.8000, spearman 0.7500, mse 0.5000 (mean baseline 2.0000) on 9 examples'
    """
    names = REGRESSOR_ROWS if _regression(metrics) else LOGGED
    parts = []
    for name in (n for n in names if n in metrics):
        part = f"{name} {metrics[name]:.4f}"
        if name in BASELINES:
            key, title = BASELINES[name]
            part += f" ({title} {metrics[key]:.4f})"
        parts.append(part)
    return f"{split} {', '.join(parts)} on {int(metrics['examples'])} examples"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return ["| " + " | ".join(cells) + " |" for cells in (header, align, *rows)]


def _metrics_table(splits: dict[str, dict[str, float]]) -> list[str]:
    """One row per metric; per split its value and, beside accuracy (mse), the baseline."""
    first = next(iter(splits.values()))
    regression = _regression(first)
    names = [n for n in (REGRESSOR_ROWS if regression else CLASSIFIER_ROWS) if n in first]
    baseline = BASELINES["mse" if regression else "accuracy"][1]
    header = ["metric", *(cell for split in splits for cell in (split, baseline))]
    rows = [[name, *(cell for m in splits.values() for cell in (
        f"{m[name]:.4f}", f"{m[BASELINES[name][0]]:.4f}" if name in BASELINES else ""))]
        for name in names]
    note = ("Mean baseline: the MSE of always predicting the split's mean score." if regression
            else "Majority baseline: the accuracy of always predicting the split's most "
                 "frequent class.")
    return [*_table(header, rows), "", note]


def _class_tables(metrics: dict[str, float], confusion: list[list[int]],
                  labels: tuple[str, ...]) -> list[str]:
    """Dev's precision, recall and F1 per class, then its confusion matrix."""
    per_class = [[label, *(f"{metrics[f'{m}_{key}']:.4f}" for m in ("precision", "recall", "f1")),
                  str(sum(row))]
                 for label, key, row in zip(labels, class_keys(labels), confusion)]
    return ["## Per class (dev)", "",
            *_table(["class", "precision", "recall", "f1", "examples"], per_class), "",
            "## Confusion matrix (rows true, columns predicted)", "",
            *_table(["true \\ predicted", *labels],
                    [[label, *map(str, row)] for label, row in zip(labels, confusion)]), ""]


def summary_markdown(task: str, splits: dict[str, dict[str, float]],
                     confusion: list[list[int]], collapsed_reason: str | None, history: dict,
                     labels: tuple[str, ...] = ()) -> str:
    """A short report: the metrics of each labeled split (dev first) beside their baselines,
    the collapse warning, dev per class and its confusion matrix (classifiers), training steps
    and throughput."""
    counts = "; ".join(f"{name}: {int(m['examples'])} examples" for name, m in splits.items())
    lines = [f"# {task} evaluation", "", counts[0].upper() + counts[1:] + ".", "",
             *_metrics_table(splits), ""]
    if collapsed_reason:
        lines += [f"> **Warning: collapsed model:** {collapsed_reason}.", ""]
    if confusion:
        labels = labels or tuple(str(i) for i in range(len(confusion)))
        lines += _class_tables(next(iter(splits.values())), confusion, labels)
    return "\n".join([*lines, "## Training", "", _training_line(history)]) + "\n"


def _training_line(history: dict) -> str:
    """'345 steps in 3 epochs, 55.0 examples/s[, 4 dev evaluations, best loss 0.41 at step
    200][, resumed from step 200].'"""
    steps, speed = history["steps"], history["examples_per_second"] or 0
    line = f"{steps[-1] if steps else 0} steps"
    if history["epochs"]:
        line += f" in {len(history['epochs'])} epochs"
    line += f", {speed:.1f} examples/s"
    if evaluations := history.get("evaluations"):
        best = min(evaluations, key=lambda e: e["loss"])
        line += (f", {len(evaluations)} dev evaluations, best loss {best['loss']:.4f} at step "
                 f"{best['step']}")
    resumed = history.get("resumed_from_step")
    return line + (f", resumed from step {resumed}." if resumed else ".")
