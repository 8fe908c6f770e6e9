"""Evaluate stage: the fine-tuned model on every labeled evaluation split of the shards (metrics,
plots) and on every test split (run_classifier's and GLUE's files), as the manifest lists them.

    report_dir/
      metrics.json               dev's metrics, confusion matrix and collapse verdict; `splits`:
                                 the metrics of the other evaluation splits (MNLI's dev_mismatched)
      dev_predictions.tsv        guid, label, p_<label>..., prediction (<split>_predictions.tsv
                                 for the other evaluation splits)
      test_results.tsv           run_classifier's, of the test split (test_results_<split>.tsv of
                                 the others, MNLI's test_mismatched)
      CoLA.tsv, MNLI-m.tsv ...   GLUE's submission of each test split, named by the manifest
      confusion_matrix.png       classifiers; roc_curve.png, pr_curve.png with two classes
      scatter.png                regression: predicted against true score
      loss_curve.png  summary.md

The folder is written beside its place and renamed into it, so it is whole or absent. Dev is the
split that promotes: a model that does not beat the constant predictors on it (or that predicts
one class for almost every example) is flagged collapsed (tasks/metrics.py).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from bert_core.inputs import read_split
from bert_core.predict import predict_logits
from tasks.atomic import publish_dir, write_json
from tasks.caching import cached, content_key, refreshing
from tasks.config import EvalConfig
from tasks.fingerprint import sealed_files, unsealed
from tasks.metrics import (
    collapse_check,
    confusion,
    regression_collapse_check,
    split_metrics,
)
from tasks.plots import plot_confusion, plot_loss, plot_pr, plot_roc, plot_scatter
from tasks.progress import run_log
from tasks.records import EvalReport, Shards, TrainedModel
from tasks.report import (
    metrics_line,
    summary_markdown,
    write_glue_submission,
    write_predictions,
    write_test_results,
)

# Keras (and TensorFlow under it) is imported where a model is loaded, not here: a run whose
# evaluate task is cached never pays the ~5 s import.
if TYPE_CHECKING:
    import keras

# What shapes the report besides our own code: the model's numerics, the metrics and the plots.
LIBRARIES = ("tensorflow", "keras", "numpy", "jax", "jaxlib", "scikit-learn", "scipy",
             "matplotlib")
PRIMARY = {"eval": "dev", "test": "test"}  # the split of each role that comes first
logger = logging.getLogger(__name__)
# A split's (outputs, labels, guids): class probabilities (n, k) or scores (n,), label ids or
# true scores (None when unlabeled), example ids.
Predicted = tuple[np.ndarray, "np.ndarray | None", list[str]]


@dataclass(frozen=True)
class EvalPlan:
    """What the shards' manifest asks of the evaluate stage."""

    task: str
    labels: tuple[str, ...]  # class names in logit order; () for a regression task
    positive: int | None  # the class whose F1, ROC and PR a two-class task reports
    evals: tuple[str, ...]  # the labeled evaluation splits, dev first
    tests: tuple[str, ...]  # the test splits, test first
    submission: dict[str, str]  # test split -> GLUE submission file name

    @property
    def regression(self) -> bool:
        return not self.labels

    def results_file(self, split: str) -> str:
        """run_classifier's file name for the test split `split`."""
        return "test_results.tsv" if split == PRIMARY["test"] else f"test_results_{split}.tsv"


def eval_plan(manifest: dict) -> EvalPlan:
    """The plan from a manifest (written by tasks/tokenize.py).

    >>> plan = eval_plan({"task": "rte", "labels": ["entailment", "not_entailment"],
    ...     "positive": "entailment", "submission": {"test": "RTE.tsv"},
    ...     "splits": {"train": {"role": "train", "labeled": True}, "test": {"role": "test",
    ...                "labeled": False}, "dev": {"role": "eval", "labeled": True}}})
    >>> plan.positive, plan.evals, plan.tests, plan.results_file("test")
    (0, ('dev',), ('test',), 'test_results.tsv')
    """
    labels, splits = tuple(manifest["labels"]), manifest["splits"]

    def role(name: str) -> tuple[str, ...]:
        names = [s for s, entry in splits.items() if entry["role"] == name and
                 (entry["labeled"] or name == "test")]
        return tuple(sorted(names, key=lambda s: s != PRIMARY[name]))  # stable: manifest order

    evals = role("eval")
    if PRIMARY["eval"] not in evals:
        raise ValueError(f"the shards of task {manifest['task']} have no labeled dev split "
                         f"to evaluate: {sorted(splits)}")
    positive = manifest["positive"]
    return EvalPlan(manifest["task"], labels, None if positive is None else labels.index(positive),
                    evals, role("test"), dict(manifest["submission"]))


def predict_split(model: keras.Model, shards: Shards, split: str, batch_size: int,
                  log: Callable[[str], None] | None = None) -> Predicted:
    """Outputs, labels (None for an unlabeled split) and guids of every example of `split`, in
    manifest order: class probabilities (n, num_labels), or for a regression task the model's
    one output, the score (n,). Batches are padded only to their own longest pair
    (bert_core/predict.py); a large split logs its progress (`log`, default the run logger)."""
    from bert_core.model import softmax

    manifest = json.loads(shards.manifest.read_text())
    regression = not manifest["labels"]  # as TrainedModel.regression
    width = 1 if regression else len(manifest["labels"])  # a regressor has one output unit
    data = read_split(shards.shard_dir, split)
    logits = np.zeros((0, width))
    if data.guids:
        logits = predict_logits(model, data.features, batch_size, split, log or run_log(logger))
    if logits.shape[1] != width:
        wanted = "a score" if regression else f"a logit per label of {manifest['labels']}"
        raise ValueError(f"the model outputs {logits.shape[1]} values an example; task "
                         f"{manifest['task']} wants {width}: {wanted}")
    outputs = logits[:, 0].astype(np.float64) if regression else softmax(logits)
    return outputs, data.labels, data.guids


def dev_verdict(plan: EvalPlan, dev: Predicted, metrics: dict[str, float],
                collapse_share: float) -> tuple[list[list[int]], str | None]:
    """Dev's confusion matrix ([] for regression) and why the model counts as collapsed."""
    outputs, truth, _ = dev
    if plan.regression:
        return [], regression_collapse_check(metrics)
    predictions = outputs.argmax(axis=1)
    return (confusion(truth, predictions, len(plan.labels)),
            collapse_check(metrics, predictions, collapse_share, plan.labels))


def write_plots(folder: Path, plan: EvalPlan, dev: Predicted, matrix: list[list[int]],
                history: dict) -> None:
    outputs, truth, _ = dev
    if plan.regression:
        plot_scatter(truth, outputs, folder / "scatter.png")
    else:
        plot_confusion(matrix, plan.labels, folder / "confusion_matrix.png")
    if plan.positive is not None:
        is_positive, scores = np.asarray(truth) == plan.positive, outputs[:, plan.positive]
        plot_roc(is_positive, scores, folder / "roc_curve.png")
        plot_pr(is_positive, scores, folder / "pr_curve.png")
    plot_loss(history, folder / "loss_curve.png")


def write_report(folder: Path, plan: EvalPlan, evals: dict[str, Predicted],
                 tests: dict[str, np.ndarray], collapse_share: float, history: dict) -> None:
    """Every report file into `folder`, from each evaluation split's predictions (dev first)
    and each test split's outputs."""
    metrics = {split: split_metrics(truth, outputs, plan.labels, plan.positive)
               for split, (outputs, truth, _) in evals.items()}
    dev = metrics[PRIMARY["eval"]]
    matrix, reason = dev_verdict(plan, evals[PRIMARY["eval"]], dev, collapse_share)
    write_json(folder / "metrics.json", {
        "metrics": dev, "confusion_matrix": matrix, "collapsed": reason is not None,
        "collapse_reason": reason,
        "splits": {split: m for split, m in metrics.items() if split != PRIMARY["eval"]}})
    for split, (outputs, truth, guids) in evals.items():
        write_predictions(guids, truth, outputs, plan.labels, folder / f"{split}_predictions.tsv")
    for split, outputs in tests.items():
        write_test_results(outputs, folder / plan.results_file(split))
        if split in plan.submission:
            write_glue_submission(outputs, plan.labels, folder / plan.submission[split])
    write_plots(folder, plan, evals[PRIMARY["eval"]], matrix, history)
    (folder / "summary.md").write_text(summary_markdown(plan.task, metrics, matrix, reason,
                                                        history, plan.labels))


def read_report(out_dir: Path) -> EvalReport:
    return EvalReport(report_dir=str(out_dir), files=sealed_files(out_dir),
                      **json.loads((out_dir / "metrics.json").read_text()))


def load_model(trained: TrainedModel) -> keras.Model:
    import keras

    import bert_core.model  # noqa: F401  (registers BertClassifier for load_model)

    # compile=False: predicting needs no optimizer, and a process whose train task was cached
    # has never imported (so never registered) the AdamWeightDecay the file was compiled with.
    return keras.saving.load_model(trained.keras_file, compile=False)


def evaluate_model(trained: TrainedModel, shards: Shards, cfg: EvalConfig,
                   out_dir: Path, refresh: bool = False) -> EvalReport:
    """Predict every evaluation and test split and write the report folder (or read back an
    intact one, unless `refresh`)."""
    if not refresh and not unsealed(out_dir):
        return read_report(out_dir)
    plan = eval_plan(json.loads(shards.manifest.read_text()))
    if plan.labels != trained.labels:
        raise ValueError(f"{trained.keras_file} predicts labels {trained.labels}; the shards "
                         f"in {shards.shard_dir} hold task {plan.task}'s {plan.labels}")
    model = load_model(trained)
    evals = {split: predict_split(model, shards, split, cfg.batch_size) for split in plan.evals}
    tests = {split: predict_split(model, shards, split, cfg.batch_size)[0]
             for split in plan.tests}
    history = json.loads(trained.history_file.read_text())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        write_report(tmp, plan, evals, tests, cfg.collapse_share, history)
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


def metric_rows(report: EvalReport) -> list[dict]:
    """Every metric as a table row: its name, then its value on dev and each other split."""
    splits = {"dev": report.metrics, **report.splits}
    return [{"metric": name, **{split: m.get(name) for split, m in splits.items()}}
            for name in report.metrics]


@task(name="evaluate", **cached("evaluate", __name__, LIBRARIES))
def evaluate(trained: TrainedModel, shards: Shards, cfg: EvalConfig, home: str) -> EvalReport:
    """Metrics and plots of every evaluation split, test predictions in run_classifier's and
    GLUE's formats."""
    report = evaluate_model(trained, shards, cfg, Path(home) / "reports" /
                            report_key(trained, shards, cfg), refresh=refreshing())
    if report.confusion_matrix:
        create_table_artifact(key="confusion-matrix",
                              table=confusion_rows(report.confusion_matrix, trained.labels),
                              description=f"Dev confusion matrix; report in {report.report_dir}")
    else:
        create_table_artifact(key="dev-metrics", table=metric_rows(report),
                              description=f"Evaluation metrics; report in {report.report_dir}")
    log = get_run_logger()
    for split, metrics in {"dev": report.metrics, **report.splits}.items():
        log.info("%s; report in %s", metrics_line(split, metrics), report.report_dir)
    if report.collapsed:
        log.warning("collapsed model: %s", report.collapse_reason)
    return report
