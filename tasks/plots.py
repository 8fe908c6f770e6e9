"""The evaluate stage's figures, each a PNG from plain arrays (matplotlib's object API: no pyplot
state, safe in worker threads).

    plot_confusion  N x N counts with the label names          every classifier
    plot_roc        ROC of the positive class, its AUC          two classes
    plot_pr         precision-recall of the positive class, AP  two classes
    plot_scatter    predicted against true score, identity line regression
    plot_loss       training loss per step and epoch, learning rate
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn import metrics as skm

from tasks.metrics import correlation

MAX_ANNOTATED = 30  # a confusion matrix of more classes shows colours only


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png", dpi=100)
    return path


def confusion_size(num_labels: int) -> tuple[float, float]:
    """Figure inches: MRPC's 4 x 3.6 for up to five classes, 0.55 wider a class past that.

    >>> confusion_size(2), confusion_size(10)
    ((4.0, 3.6), (6.7, 6.3))
    """
    width = round(max(4.0, 1.2 + 0.55 * num_labels), 2)
    return width, round(width - 0.4, 2)


def plot_confusion(matrix: list[list[int]], labels: tuple[str, ...], path: Path) -> Path:
    """Rows true, columns predicted, each cell's count written on it; long label names are
    slanted."""
    fig = Figure(figsize=confusion_size(len(labels)), layout="constrained")
    ax = fig.subplots()
    counts = np.asarray(matrix)
    image = ax.imshow(counts, cmap="Blues")
    if len(labels) <= MAX_ANNOTATED:
        for (row, col), n in np.ndenumerate(counts):
            dark = n > counts.max() / 2
            ax.text(col, row, str(n), ha="center", va="center",
                    color="white" if dark else "black")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels,
           yticklabels=labels, xlabel="predicted", ylabel="true", title="Dev confusion matrix")
    if max(map(len, labels), default=0) > 3:
        ax.tick_params(axis="x", labelrotation=30)
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def _one_class_note(ax, is_positive: np.ndarray) -> bool:
    if len(np.unique(is_positive)) == 2:
        return False
    ax.text(0.5, 0.5, "undefined: dev holds one class", ha="center", transform=ax.transAxes)
    return True


def plot_roc(is_positive: np.ndarray, scores: np.ndarray, path: Path) -> Path:
    """ROC of the positive class against the rest (`scores`: its probabilities), its AUC in
    the legend."""
    fig = Figure(figsize=(4, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    if not _one_class_note(ax, is_positive):
        fpr, tpr, _ = skm.roc_curve(is_positive, scores)
        ax.plot(fpr, tpr, label=f"dev (AUC = {skm.auc(fpr, tpr):.3f})")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_pr(is_positive: np.ndarray, scores: np.ndarray, path: Path) -> Path:
    """Precision-recall of the positive class, average precision in the legend."""
    fig = Figure(figsize=(4, 4), layout="constrained")
    ax = fig.subplots()
    is_positive = np.asarray(is_positive, bool)
    ax.axhline(is_positive.mean(), linestyle="--", color="grey", label="all positive")
    if not _one_class_note(ax, is_positive):
        precision, recall, _ = skm.precision_recall_curve(is_positive, scores)
        ap = skm.average_precision_score(is_positive, scores)
        ax.plot(recall, precision, drawstyle="steps-post", label=f"dev (AP = {ap:.3f})")
    ax.set(xlabel="recall", ylabel="precision", ylim=(0, 1.02), title="Precision-recall curve")
    ax.legend(loc="lower left")
    return _save(fig, path)


def plot_scatter(truth: np.ndarray, scores: np.ndarray, path: Path) -> Path:
    """One point per dev example, predicted against true score, on equal axes with the identity
    line (where a perfect model's points lie); Pearson's r in the legend."""
    truth, scores = np.asarray(truth, np.float64), np.asarray(scores, np.float64)
    fig = Figure(figsize=(4, 4), layout="constrained")
    ax = fig.subplots()
    both = np.concatenate([truth, scores])
    low, high = (both.min(), both.max()) if len(both) else (0.0, 1.0)
    ax.plot([low, high], [low, high], "--", color="grey", label="identity")
    alpha = float(np.clip(300 / max(len(truth), 1), 0.15, 0.8))  # dense clouds stay readable
    ax.scatter(truth, scores, s=10, alpha=alpha, edgecolors="none",
               label=f"dev (Pearson r = {correlation('pearson', truth, scores):.3f})")
    ax.set(xlabel="true score", ylabel="predicted score", title="Dev predictions", aspect="equal")
    ax.legend(loc="lower right")  # true high, predicted low: where the fewest points lie
    return _save(fig, path)


def plot_loss(history: dict, path: Path) -> Path:
    """Per-step training loss, epoch means at their last step (or the dev loss of each
    evaluation during training), learning rate on a twin axis."""
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(history["steps"], history["loss"], lw=0.8, alpha=0.6, label="step loss")
    epochs = history["epochs"]
    ax.plot([e["step"] for e in epochs], [e["loss"] for e in epochs], "o-", label="epoch mean")
    if evaluations := history.get("evaluations"):
        ax.plot([e["step"] for e in evaluations], [e["loss"] for e in evaluations], "s-",
                color="tab:red", label="dev loss")
    ax.set(xlabel="step", ylabel="loss", title="Training loss")
    lr = ax.twinx()
    lr.plot(history["steps"], history["learning_rate"], color="tab:green", lw=1, label="lr")
    lr.set_ylabel("learning rate")
    lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    lines = ax.get_legend_handles_labels()[0] + lr.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], loc="upper right")
    return _save(fig, path)
