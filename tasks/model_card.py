"""The model card of a registered version, in markdown: what it does, what it was trained on, how
well it does on dev (95% percentile-bootstrap intervals over dev rows, seeded), how it decides,
its limits, and the commands that serve it. Register logs it as the run's model_card.md and sets
it as the version's description.

    # bertflow-mrpc v3            the gate's decision line under the title
    ## Task                       the task, its labels, the positive class, how it was trained
    ## Data lineage               drop, data.digest, training.key, sha256 of every file
    ## Dev metrics                value and interval of each metric the evaluate stage logs
    ## Calibration and decision   temperature, ECE / Brier before and after, the threshold
    ## Intended use and limits    the languages and lengths it saw, what was fitted on dev
    ## Serving                    mlflow models serve, bertflow score
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from data_contracts.specs import GLUE
from data_contracts.specs.xnli import xnli
from tasks.calibration import Calibration, at_temperature, dev_outputs
from tasks.config import RegistryConfig
from tasks.gate import metric_value
from tasks.records import EvalReport, ModelVersion, TrainedModel
from tasks.report import LOGGED, REGRESSOR_ROWS

LEVEL = 0.95
LINEAGE_FIRST = ("drop", "data.digest", "training.key")  # then every sha256.<file>


@dataclass(frozen=True)
class Interval:
    metric: str
    value: float
    low: float
    high: float


def bootstrap_intervals(truth: np.ndarray, outputs: np.ndarray, labels: tuple[str, ...],
                        positive: int | None, metrics: tuple[str, ...], resamples: int,
                        seed: int) -> list[Interval]:
    """Each metric (tasks/gate.py metric_value) on all rows, with the 95% percentile bootstrap
    interval over rows (`resamples` draws from `seed`: the same for every metric).

    >>> truth = np.array([0, 1] * 20)
    >>> [i.value for i in bootstrap_intervals(truth, np.eye(2)[truth], ("a", "b"), 1,
    ...                                       ("accuracy", "f1"), 1000, 0)]
    [1.0, 1.0]
    """
    truth, outputs = np.asarray(truth), np.asarray(outputs, np.float64)
    rows = np.arange(len(truth))
    intervals = []
    for metric in metrics:
        def score(i, metric=metric):
            return metric_value(metric, truth[i], outputs[i], labels, positive)

        with warnings.catch_warnings():  # one value in every resample: a degenerate interval
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            found = stats.bootstrap((rows,), score, n_resamples=resamples, vectorized=False,
                                    confidence_level=LEVEL, method="percentile",
                                    random_state=np.random.default_rng(seed))
        low, high = found.confidence_interval
        intervals.append(Interval(metric, score(rows), float(low), float(high)))
    return intervals


def card_metrics(dev_metrics: dict[str, float], regression: bool) -> tuple[str, ...]:
    """The dev metrics a card lists: those the evaluate stage logs, where dev has them.

    >>> card_metrics({"accuracy": 0.8, "f1": 0.85, "examples": 408.0}, False)
    ('accuracy', 'f1')
    """
    return tuple(m for m in (REGRESSOR_ROWS if regression else LOGGED) if m in dev_metrics)


def task_title(task: str, language: str | None = None) -> str:
    """
    >>> task_title("mrpc")
    'MRPC: is sentence B a paraphrase of sentence A?'
    >>> task_title("xnli", "de")
    'XNLI (de): entailment, contradiction or neutral?'
    """
    if task in GLUE:
        return GLUE[task].title
    return xnli(language or "zh").title if task == "xnli" else f"{task}: the user's own files"


def _language(task: str, language: str | None) -> str:
    if task in GLUE:
        return "English (GLUE)"
    return f"XNLI's {language or 'zh'}" if task == "xnli" else "those of its training files"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def task_lines(trained: TrainedModel, title: str, positive: str | None) -> list[str]:
    outputs = ("a score (regression)" if trained.regression else
               "labels " + ", ".join(f"`{label}`" for label in trained.labels))
    reads = "a pair of texts (text_a, text_b)" if trained.pair else "one text (text_a)"
    lines = [f"{title} Reads {reads}; answers {outputs}."]
    if positive is not None:
        lines.append(f"The positive class is `{positive}` (`probability` is its probability).")
    return [*lines, f"Fine-tuned from {trained.init} for {trained.steps} steps "
                    f"(model.keras sha256 `{trained.model_sha256}`)."]


def lineage_lines(lineage: dict[str, str]) -> list[str]:
    """The drop, data.digest, training.key, then the sha256 of every file (checkpoint too).

    >>> lineage_lines({"sha256.train.tsv": "ab", "drop": "2026-11-30", "task": "mrpc"})[2:]
    ['| drop | `2026-11-30` |', '| sha256.train.tsv | `ab` |']
    """
    keys = [k for k in LINEAGE_FIRST if k in lineage]
    keys += sorted(k for k in lineage if k.startswith("sha256."))
    if not keys:
        return ["No lineage was recorded for this version."]
    return _table(("what", "value"), [(k, f"`{lineage[k]}`") for k in keys])


def metric_lines(intervals: list[Interval], examples: int, resamples: int,
                 seed: int) -> list[str]:
    rows = [(i.metric, f"{i.value:.4f}", f"{i.low:.4f} .. {i.high:.4f}") for i in intervals]
    return [*_table(("metric", "dev", f"{LEVEL:.0%} interval"), rows), "",
            f"On {examples} dev examples, from the served (calibrated) probabilities, a label "
            "being the likelier class as evaluate scores it (the threshold's own dev numbers "
            f"are under Calibration); percentile bootstrap over rows, {resamples} resamples, "
            f"seed {seed}."]


def calibration_lines(calibration: Calibration, positive: str | None) -> list[str]:
    """The temperature, ECE and Brier before and after, and how a label is chosen."""
    if calibration.ece_before is None:
        return [f"None fitted ({calibration.note}): the model's own outputs are served; a label "
                "is the likelier class."]
    c = calibration
    table = _table(("", "before", "after"), [
        ("ECE (15 equal-width bins)", f"{c.ece_before:.4f}", f"{c.ece_after:.4f}"),
        ("Brier score", f"{c.brier_before:.4f}", f"{c.brier_after:.4f}")])
    decision = ("the likelier class" if c.threshold is None else
                f"`{positive}` when its calibrated probability is at least {c.threshold:.4g}")
    return [f"Temperature T = {c.temperature:.4g} (served probabilities are softmax(logits / T)),"
            f" fitted on {c.examples} dev examples by negative log-likelihood.", "", *table, "",
            f"Decision: {decision} ({c.note})."]


def limits_lines(trained: TrainedModel, language: str | None, truncated_share: float | None,
                 calibration: Calibration) -> list[str]:
    share = ("" if truncated_share is None else
             f" ({truncated_share:.1%} of its training examples were longer and cut to fit)")
    lines = [f"- Made for the task above, on text like its training data: language "
             f"{_language(trained.task, language)}.",
             f"- Reads at most {trained.max_seq_length} wordpieces per example, both texts "
             f"together; longer input is truncated{share}.",
             f"- {'Lower-cased' if trained.do_lower_case else 'Cased'} WordPiece input; words "
             "outside the vocabulary become [UNK]."]
    if calibration.ece_before is not None:
        lines.append("- The temperature and threshold were fitted on dev, which is also the "
                     "evaluation set: the dev numbers above are optimistic for them.")
    return lines


def serving_lines(name: str, version: str) -> list[str]:
    uri = f"models:/{name}/{version}"
    return ["```bash",
            f"mlflow models serve -m {uri} --env-manager local -h 127.0.0.1 -p 5001",
            f"bertflow score --input FILE --output FILE.parquet --model-uri {uri}", "```"]


def model_card(name: str, version: str, trained: TrainedModel, decision: str,
               lineage: dict[str, str], intervals: list[Interval], examples: int,
               resamples: int, seed: int, calibration: Calibration,
               positive: str | None = None, truncated_share: float | None = None,
               language: str | None = None) -> str:
    """The card of `name` version `version` (see the module docstring)."""
    sections = [
        [f"# {name} v{version}", "", decision],
        ["## Task", "", *task_lines(trained, task_title(trained.task, language), positive)],
        ["## Data lineage", "", *lineage_lines(lineage)],
        ["## Dev metrics", "", *metric_lines(intervals, examples, resamples, seed)],
        ["## Calibration and decision", "", *calibration_lines(calibration, positive)],
        ["## Intended use and limits", "",
         *limits_lines(trained, language, truncated_share, calibration)],
        ["## Serving", "", *serving_lines(name, version)]]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"


def truncated_share(files: list[str]) -> float | None:
    """The training data profile's share of examples longer than max_seq_length, where one of
    `files` is that profile (profile.json)."""
    for path in files:
        if Path(path).name == "profile.json":
            return json.loads(Path(path).read_text()).get("truncated_share")
    return None


def card_for(version: ModelVersion, trained: TrainedModel, report: EvalReport,
             calibration: Calibration, lineage: dict[str, str], cfg: RegistryConfig,
             params: dict[str, object], extra_artifacts: list[str], manifest: str) -> str:
    """The card of a registered version, from what the register stage holds: dev metrics at
    its temperature, bootstrapped as cfg's gate is (resamples, seed), the F1 class from the
    shards' manifest, the truncated share from the data profile among `extra_artifacts`."""
    labels = trained.labels
    f1_class = json.loads(Path(manifest).read_text()).get("positive")
    _, outputs, truth = dev_outputs(report.report_dir, labels)
    outputs = at_temperature(outputs, labels, calibration.temperature)
    intervals = bootstrap_intervals(truth, outputs, labels,
                                    None if f1_class is None else labels.index(f1_class),
                                    card_metrics(report.metrics, trained.regression),
                                    cfg.bootstrap_resamples, cfg.seed)
    language = params.get("task.language")
    return model_card(version.name, version.version, trained, version.decision, lineage,
                      intervals, len(truth), cfg.bootstrap_resamples, cfg.seed, calibration,
                      positive=labels[1] if len(labels) == 2 else None,
                      truncated_share=truncated_share(extra_artifacts),
                      language=None if language is None else str(language))
