"""Evaluate stage: the fine-tuned classifier on dev (metrics, plots) and on test (GLUE's files).

    report_dir/
      metrics.json          dev metrics, confusion matrix, collapse verdict
      dev_predictions.tsv   guid, label, p_positive, prediction
      test_results.tsv      run_classifier's: the class probabilities of one example per line
      MRPC.tsv              GLUE's submission: index, predicted label
      confusion_matrix.png  roc_curve.png  pr_curve.png  loss_curve.png  summary.md

The folder is written beside its place and renamed into it, so it is whole or absent. A model that
predicts one class for almost every dev example, or that does not beat the majority baseline, is
flagged collapsed: google-research/bert fine-tuned from scratch scores exactly the baseline on MRPC
dev (68.4%), which is a model that learned nothing.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from sklearn import metrics as skm

from bert_core.features import PARAPHRASE
from bert_core.inputs import read_split
from bert_core.predict import predict_logits
from tasks.atomic import publish_dir, write_json
from tasks.caching import cached, content_key, refreshing
from tasks.config import EvalConfig
from tasks.fingerprint import sealed_files, unsealed
from tasks.progress import run_log
from tasks.records import EvalReport, Shards, TrainedModel

# Keras (and TensorFlow under it) is imported where a model is loaded, not here: a run whose
# evaluate task is cached never pays the ~5 s import.
if TYPE_CHECKING:
    import keras

# What shapes the report besides our own code: the model's numerics, the metrics and the plots.
LIBRARIES = ("tensorflow", "keras", "numpy", "jax", "jaxlib", "scikit-learn", "matplotlib")
POSITIVE = PARAPHRASE  # GLUE's MRPC F1 is the F1 of this class
logger = logging.getLogger(__name__)


def predict_split(model: keras.Model, shards: Shards, split: str, batch_size: int,
                  log: Callable[[str], None] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Class probabilities (n, num_labels), label ids (None for an unlabeled split) and guids of
    every example of `split`, in manifest order. Batches are padded only to their own longest
    pair (bert_core/predict.py); a large split logs its progress (`log`, default the run logger)."""
    from bert_core.model import softmax

    data = read_split(shards.shard_dir, split)
    features, labels, guids = data.features, data.labels, data.guids
    if not guids:
        num_labels = len(json.loads(shards.manifest.read_text())["labels"])
        return np.zeros((0, num_labels)), labels, guids
    logits = predict_logits(model, features, batch_size, split, log or run_log(logger))
    return softmax(logits), labels, guids


def _roc_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC (one-vs-rest macro past two labels); NaN when dev lacks a class."""
    if len(np.unique(labels)) < probs.shape[1]:
        return float("nan")
    if probs.shape[1] == 2:
        return float(skm.roc_auc_score(labels, probs[:, POSITIVE]))
    return float(skm.roc_auc_score(labels, probs, multi_class="ovr"))


def dev_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy; F1, precision, recall of the positive class; mean cross-entropy (probabilities
    clipped to the float64 epsilon); ROC AUC (NaN if dev holds one class); the majority baseline
    (share of the most frequent true class); the share predicted positive; the example count."""
    labels, probs = np.asarray(labels), np.asarray(probs, np.float64)
    classes = list(range(probs.shape[1]))
    predictions = probs.argmax(axis=1)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, predictions, labels=[POSITIVE], zero_division=0)
    return {
        "accuracy": float(skm.accuracy_score(labels, predictions)),
        "f1": float(f1[0]), "precision": float(precision[0]), "recall": float(recall[0]),
        "loss": float(skm.log_loss(labels, probs, labels=classes)),
        "roc_auc": _roc_auc(labels, probs),
        "majority_baseline": float(np.bincount(labels, minlength=len(classes)).max() / len(labels)),
        "positive_share": float(np.mean(predictions == POSITIVE)),
        "examples": float(len(labels)),
    }


def confusion(labels: np.ndarray, predictions: np.ndarray, num_labels: int = 2) -> list[list[int]]:
    """Rows are true labels, columns predicted: [[tn, fp], [fn, tp]] for two labels."""
    matrix = skm.confusion_matrix(labels, predictions, labels=list(range(num_labels)))
    return [[int(n) for n in row] for row in matrix]


def collapse_check(metrics: dict[str, float], predictions: np.ndarray,
                   collapse_share: float) -> str | None:
    """Why the model counts as collapsed (one class for >= `collapse_share` of dev, or accuracy
    at or below the majority baseline); None when it is not."""
    counts = np.bincount(np.asarray(predictions))
    share = counts.max() / counts.sum()
    reasons = []
    if share >= collapse_share:
        reasons.append(f"predicts label {counts.argmax()} for {share:.1%} of dev examples "
                       f"(limit {collapse_share:.0%})")
    accuracy, baseline = metrics["accuracy"], metrics["majority_baseline"]
    if accuracy <= baseline + 1e-12:
        reasons.append(f"accuracy {accuracy:.4f} does not beat the majority baseline "
                       f"{baseline:.4f}")
    return "; ".join(reasons) or None


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_bytes("".join(line + "\n" for line in lines).encode())
    return path


def write_test_results(probs: np.ndarray, path: Path) -> Path:
    """run_classifier's test_results.tsv: per example its class probabilities (str of float32,
    as run_classifier wrote them), tab-separated; no header."""
    return _write_lines(path, ["\t".join(str(p) for p in row)
                               for row in np.asarray(probs, np.float32)])


def write_glue_submission(probs: np.ndarray, labels: tuple[str, ...], path: Path) -> Path:
    """GLUE's MRPC.tsv: `index<TAB>prediction` with the label string of each argmax."""
    predictions = np.asarray(probs).argmax(axis=1)
    return _write_lines(path, ["index\tprediction",
                               *(f"{i}\t{labels[p]}" for i, p in enumerate(predictions))])


def write_dev_predictions(guids: list[str], labels: np.ndarray, probs: np.ndarray,
                          path: Path) -> Path:
    """One row per dev example: guid, true label id, p(positive), predicted label id."""
    rows = zip(guids, labels, probs[:, POSITIVE], probs.argmax(axis=1))
    return _write_lines(path, ["guid\tlabel\tp_positive\tprediction",
                               *(f"{g}\t{y}\t{p:.6f}\t{k}" for g, y, p, k in rows)])


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png", dpi=100)
    return path


def plot_confusion(matrix: list[list[int]], labels: tuple[str, ...], path: Path) -> Path:
    fig = Figure(figsize=(4, 3.6), layout="constrained")
    ax = fig.subplots()
    counts = np.asarray(matrix)
    image = ax.imshow(counts, cmap="Blues")
    for (row, col), n in np.ndenumerate(counts):
        dark = n > counts.max() / 2
        ax.text(col, row, str(n), ha="center", va="center", color="white" if dark else "black")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels,
           yticklabels=labels, xlabel="predicted", ylabel="true", title="Dev confusion matrix")
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def _one_class_note(ax, labels: np.ndarray) -> bool:
    if len(np.unique(labels == POSITIVE)) == 2:
        return False
    ax.text(0.5, 0.5, "undefined: dev holds one class", ha="center", transform=ax.transAxes)
    return True


def plot_roc(labels: np.ndarray, probs: np.ndarray, path: Path) -> Path:
    """ROC of the positive class against the rest, its AUC in the legend."""
    fig = Figure(figsize=(4, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    if not _one_class_note(ax, labels):
        fpr, tpr, _ = skm.roc_curve(labels == POSITIVE, probs[:, POSITIVE])
        ax.plot(fpr, tpr, label=f"dev (AUC = {skm.auc(fpr, tpr):.3f})")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_pr(labels: np.ndarray, probs: np.ndarray, path: Path) -> Path:
    """Precision-recall of the positive class, average precision in the legend."""
    fig = Figure(figsize=(4, 4), layout="constrained")
    ax = fig.subplots()
    positive = np.asarray(labels) == POSITIVE
    ax.axhline(positive.mean(), linestyle="--", color="grey", label="all positive")
    if not _one_class_note(ax, labels):
        precision, recall, _ = skm.precision_recall_curve(positive, probs[:, POSITIVE])
        ap = skm.average_precision_score(positive, probs[:, POSITIVE])
        ax.plot(recall, precision, drawstyle="steps-post", label=f"dev (AP = {ap:.3f})")
    ax.set(xlabel="recall", ylabel="precision", ylim=(0, 1.02), title="Precision-recall curve")
    ax.legend(loc="lower left")
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


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return ["| " + " | ".join(cells) + " |" for cells in (header, align, *rows)]


def summary_markdown(metrics: dict[str, float], confusion: list[list[int]],
                     collapsed_reason: str | None, history: dict,
                     labels: tuple[str, ...] | None = None) -> str:
    """A short report: metrics (majority baseline beside accuracy), confusion, collapse warning,
    training steps and throughput."""
    labels = labels or tuple(str(i) for i in range(len(confusion)))
    rows = [[name, f"{metrics[name]:.4f}",
             f"{metrics['majority_baseline']:.4f}" if name == "accuracy" else ""]
            for name in ("accuracy", "f1", "precision", "recall", "roc_auc", "loss",
                         "positive_share")]
    lines = ["# MRPC evaluation", "", f"Dev: {int(metrics['examples'])} examples.", "",
             *_table(["metric", "dev", "majority baseline"], rows), ""]
    if collapsed_reason:
        lines += [f"> **Warning: collapsed model:** {collapsed_reason}.", ""]
    lines += ["## Confusion matrix (rows true, columns predicted)", "",
              *_table(["true \\ predicted", *labels],
                      [[label, *map(str, row)] for label, row in zip(labels, confusion)]), ""]
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


def write_report(folder: Path, dev: tuple[np.ndarray, np.ndarray, list[str]],
                 test_probs: np.ndarray, labels: tuple[str, ...], collapse_share: float,
                 history: dict) -> None:
    """Every report file into `folder`, from dev (probs, labels, guids) and test probabilities."""
    probs, truth, guids = dev
    metrics = dev_metrics(truth, probs)
    matrix = confusion(truth, probs.argmax(axis=1), len(labels))
    reason = collapse_check(metrics, probs.argmax(axis=1), collapse_share)
    write_json(folder / "metrics.json", {"metrics": metrics, "confusion_matrix": matrix,
                                         "collapsed": reason is not None,
                                         "collapse_reason": reason})
    write_dev_predictions(guids, truth, probs, folder / "dev_predictions.tsv")
    write_test_results(test_probs, folder / "test_results.tsv")
    write_glue_submission(test_probs, labels, folder / "MRPC.tsv")
    plot_confusion(matrix, labels, folder / "confusion_matrix.png")
    plot_roc(truth, probs, folder / "roc_curve.png")
    plot_pr(truth, probs, folder / "pr_curve.png")
    plot_loss(history, folder / "loss_curve.png")
    (folder / "summary.md").write_text(summary_markdown(metrics, matrix, reason, history, labels))


def read_report(out_dir: Path) -> EvalReport:
    return EvalReport(report_dir=str(out_dir), files=sealed_files(out_dir),
                      **json.loads((out_dir / "metrics.json").read_text()))


def evaluate_model(trained: TrainedModel, shards: Shards, cfg: EvalConfig,
                   out_dir: Path, refresh: bool = False) -> EvalReport:
    """Predict dev and test and write the report folder (or read back an intact one, unless
    `refresh`)."""
    if not refresh and not unsealed(out_dir):
        return read_report(out_dir)
    import keras

    import bert_core.model  # noqa: F401  (registers BertClassifier for load_model)

    # compile=False: predicting needs no optimizer, and a process whose train task was cached
    # has never imported (so never registered) the AdamWeightDecay the file was compiled with.
    model = keras.saving.load_model(trained.keras_file, compile=False)
    dev = predict_split(model, shards, "dev", cfg.batch_size)
    test_probs, _, _ = predict_split(model, shards, "test", cfg.batch_size)
    if dev[0].shape[1] != len(trained.labels):
        raise ValueError(f"{trained.keras_file} outputs {dev[0].shape[1]} logits for "
                         f"{len(trained.labels)} labels {trained.labels}")
    history = json.loads(trained.history_file.read_text())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        write_report(tmp, dev, test_probs, trained.labels, cfg.collapse_share, history)
        publish_dir(tmp, out_dir, replace=refresh)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return read_report(out_dir)


def report_key(trained: TrainedModel, shards: Shards, cfg: EvalConfig) -> str:
    """The report folder's name: the evaluate stage's code, libraries and content inputs."""
    return content_key("evaluate", __name__, LIBRARIES,
                       {"model": trained.model_sha256, "shards": shards.manifest_sha256,
                        "cfg": cfg})


def confusion_rows(matrix: list[list[int]], labels: tuple[str, ...]) -> list[dict]:
    """The confusion matrix as table rows: the true label, then the count per predicted label."""
    return [{"true": label, **{f"predicted {p}": n for p, n in zip(labels, row)}}
            for label, row in zip(labels, matrix)]


@task(name="evaluate", **cached("evaluate", __name__, LIBRARIES))
def evaluate(trained: TrainedModel, shards: Shards, cfg: EvalConfig, home: str) -> EvalReport:
    """Dev metrics and plots, test predictions in run_classifier's and GLUE's formats."""
    report = evaluate_model(trained, shards, cfg, Path(home) / "reports" /
                            report_key(trained, shards, cfg), refresh=refreshing())
    create_table_artifact(key="confusion-matrix", table=confusion_rows(report.confusion_matrix,
                                                                       trained.labels),
                          description=f"Dev confusion matrix; report in {report.report_dir}")
    m, logger = report.metrics, get_run_logger()
    logger.info("dev accuracy %.4f (majority baseline %.4f), f1 %.4f, roc_auc %.4f, loss %.4f "
                "on %d examples; report in %s", m["accuracy"], m["majority_baseline"], m["f1"],
                m["roc_auc"], m["loss"], m["examples"], report.report_dir)
    if report.collapsed:
        logger.warning("collapsed model: %s", report.collapse_reason)
    return report
