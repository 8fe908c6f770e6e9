"""The promotion gate: does the challenger beat the incumbent on the same evaluation examples by
more than chance? The incumbent is the champion re-scored on those examples, or, before there is
one, a constant predictor (the training labels' majority class; a regressor's mean score).

The gain (`delta`, > 0 is better; incumbent - challenger for a loss or an MSE) must be positive
and at least `min_delta`, its paired-bootstrap interval must lie above 0, and for accuracy
McNemar's exact test on the discordant pairs must reach `alpha`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from tasks.metrics import class_keys

EPS = np.finfo(np.float64).eps  # log loss clips probabilities to it, as tasks/metrics.py does


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of `metric` is the better one: loss, mse and any *_mse.

    >>> [lower_is_better(m) for m in ("mse", "loss", "dev_mismatched_mse", "mcc", "pearson")]
    [True, True, True, False, False]
    """
    return metric in ("loss", "mse") or metric.endswith("_mse")


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """top / bottom, 0 where bottom is 0 (scikit-learn's zero_division=0)."""
    return np.divide(top, bottom, out=np.zeros(len(top)), where=bottom > 0)


def _confusion_metrics(cm: np.ndarray, labels: tuple[str, ...],
                       positive: int | None) -> dict[str, float]:
    """classification_metrics' keys that a confusion matrix (rows true) determines."""
    n, tp, true, pred = cm.sum(), np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    cov = (tp.sum() * n - true @ pred, n * n - true @ true, n * n - pred @ pred)
    precision, recall, f1 = _ratio(tp, pred), _ratio(tp, true), _ratio(2 * tp, true + pred)
    values = {"accuracy": tp.sum() / n, "macro_f1": f1.mean(),
              "mcc": cov[0] / np.sqrt(cov[1] * cov[2]) if cov[1] * cov[2] else 0.0,
              "majority_baseline": true.max() / n, "examples": n}
    for i, key in enumerate(class_keys(labels)):
        values |= {f"precision_{key}": precision[i], f"recall_{key}": recall[i],
                   f"f1_{key}": f1[i]}
    if positive is not None:
        values |= {"f1": f1[positive], "precision": precision[positive],
                   "recall": recall[positive], "positive_share": pred[positive] / n}
    return values


def _roc_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney U over mid-ranks (scikit-learn's ROC AUC); NaN with one class present."""
    positives = int(is_positive.sum())
    negatives = len(is_positive) - positives
    if not positives or not negatives:
        return float("nan")
    rank_sum = stats.rankdata(scores)[is_positive].sum()
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r; 0 (not NaN) where either side is constant or shorter than 2."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    x, y = x - x.mean(), y - y.mean()
    return float(np.clip(x @ y / np.sqrt((x @ x) * (y @ y)), -1.0, 1.0))


def _regression_value(metric: str, truth: np.ndarray, scores: np.ndarray) -> float:
    mse = lambda: np.mean((scores - truth) ** 2)
    values = {"mse": mse, "loss": mse, "pearson": lambda: _pearson(truth, scores),
              "spearman": lambda: _pearson(stats.rankdata(truth), stats.rankdata(scores)),
              "mean_baseline_mse": lambda: np.mean((truth - truth.mean()) ** 2),
              "examples": lambda: len(truth)}
    if metric not in values:
        raise ValueError(f"no regression metric {metric!r}: one of {sorted(values)}")
    return float(values[metric]())


def metric_value(metric: str, truth: np.ndarray, outputs: np.ndarray, labels: tuple[str, ...],
                 positive: int | None) -> float:
    """`split_metrics(truth, outputs, labels, positive)[metric]`, computed alone in plain numpy
    (tens of microseconds: the bootstrap calls it thousands of times); the one difference is
    that a constant's Pearson or Spearman correlation is 0 here, not NaN.

    >>> probs = np.eye(2)[[1, 1, 0, 1]]
    >>> metric_value("accuracy", [1, 0, 0, 1], probs, ("no", "yes"), 1)
    0.75
    >>> metric_value("f1", [1, 0, 0, 1], probs, ("no", "yes"), 1), metric_value("spearman",
    ...     [1.0, 2.0, 3.0], [2.0, 2.0, 2.0], (), None)
    (0.8, 0.0)
    """
    truth, outputs = np.asarray(truth), np.asarray(outputs, np.float64)
    if not labels:
        return _regression_value(metric, truth.astype(np.float64), outputs)
    truth = truth.astype(np.int64)
    if metric == "loss":
        return float(-np.mean(np.log(np.clip(outputs[np.arange(len(truth)), truth],
                                              EPS, 1 - EPS))))
    if metric == "roc_auc" and positive is not None:
        return float(_roc_auc(truth == positive, outputs[:, positive]))
    k = len(labels)
    cm = np.bincount(truth * k + outputs.argmax(axis=1), minlength=k * k).reshape(k, k)
    values = _confusion_metrics(cm, labels, positive)
    if metric not in values:
        raise ValueError(f"no classification metric {metric!r}: loss, roc_auc or one of "
                         f"{sorted(values)}")
    return float(values[metric])


def constant_outputs(n: int, labels: tuple[str, ...], majority: int | None,
                     mean: float | None) -> np.ndarray:
    """The constant predictor's outputs for `n` examples: one-hot of the `majority` class, or,
    without labels, the `mean` score repeated.

    >>> constant_outputs(2, ("a", "b", "c"), 2, None).tolist(), constant_outputs(2, (), None, 0.5)
    ([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], array([0.5, 0.5]))
    """
    if labels:
        if majority is None:
            raise ValueError("a classifier's constant predictor needs the majority class")
        return np.tile(np.eye(len(labels))[majority], (n, 1))
    if mean is None:
        raise ValueError("a regressor's constant predictor needs the mean training score")
    return np.full(n, float(mean))


def paired_bootstrap(truth: np.ndarray, challenger: np.ndarray, incumbent: np.ndarray,
                     score: Callable[[np.ndarray, np.ndarray], float], resamples: int,
                     seed: int, alpha: float) -> tuple[float, float]:
    """The (1 - alpha) percentile interval of score(challenger) - score(incumbent), both scored
    on the same resamples of the examples. Exactly:

        idx = np.random.default_rng(seed).integers(0, n, (resamples, n))   # one draw
        d[r] = score(truth[idx[r]], challenger[idx[r]]) - score(truth[idx[r]], incumbent[idx[r]])
        low, high = np.quantile(d, [alpha / 2, 1 - alpha / 2])             # method="linear"

    scipy.stats.bootstrap(paired=True) broadcasts the samples against each other beyond the
    resampled axis, so label ids (n,) beside probabilities (n, k) fail there ("Array shapes
    are incompatible for broadcasting"); the indices are drawn here as scipy draws them for
    paired data, and scipy's one-sample percentile bootstrap of np.arange(n) agrees.

    >>> t = np.array([0, 1] * 5)
    >>> paired_bootstrap(t, np.eye(2)[t], np.eye(2)[t], lambda y, p: (p.argmax(1) == y).mean(),
    ...                  1000, 0, 0.05)
    (0.0, 0.0)
    """
    truth, challenger, incumbent = map(np.asarray, (truth, challenger, incumbent))
    idx = np.random.default_rng(seed).integers(0, len(truth), (resamples, len(truth)))
    deltas = np.array([score(truth[i], challenger[i]) - score(truth[i], incumbent[i])
                       for i in idx])
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def mcnemar_exact(right_before: np.ndarray, right_after: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: of the examples where exactly one model is right, how
    unlikely so lopsided a split is under a fair coin (1.0 when there are none).

    >>> round(mcnemar_exact([False] * 10 + [True] * 2, [True] * 10 + [False] * 2), 4)
    0.0386
    """
    before, after = np.asarray(right_before, bool), np.asarray(right_after, bool)
    became_right, became_wrong = int(np.sum(~before & after)), int(np.sum(before & ~after))
    if not became_right + became_wrong:
        return 1.0
    return float(stats.binomtest(became_right, became_right + became_wrong).pvalue)


@dataclass(frozen=True)
class Flip:
    guid: str
    text_a: str
    text_b: str | None
    truth: str
    before: str
    after: str


@dataclass(frozen=True)
class Flips:
    right: int  # examples the incumbent got wrong and the challenger right
    wrong: int  # and the other way round
    became_right: tuple[Flip, ...]  # the first k of each, in evaluation order
    became_wrong: tuple[Flip, ...]


def flips(guids: Sequence[str], text_a: Sequence[str], text_b: Sequence[str | None] | None,
          truth_names: Sequence[str], before_names: Sequence[str], after_names: Sequence[str],
          k: int = 5) -> Flips:
    """Which predictions changed from wrong to right and from right to wrong.

    >>> f = flips(["g1", "g2", "g3"], ["a1", "a2", "a3"], None, ["y", "n", "y"],
    ...           ["n", "n", "y"], ["y", "n", "n"])
    >>> f.right, f.wrong, f.became_right[0].guid, f.became_wrong[0].after
    (1, 1, 'g1', 'n')
    """
    rows = [Flip(guid, a, b, truth, before, after) for guid, a, b, truth, before, after in zip(
        guids, text_a, text_b if text_b is not None else [None] * len(guids), truth_names,
        before_names, after_names, strict=True)]
    right = [f for f in rows if f.before != f.truth and f.after == f.truth]
    wrong = [f for f in rows if f.before == f.truth and f.after != f.truth]
    return Flips(len(right), len(wrong), tuple(right[:k]), tuple(wrong[:k]))


def _num(value: float | None) -> str:
    """A tag value: ints as written, floats as repr (round-tripping), None as "none"."""
    return "none" if value is None else str(value) if isinstance(value, int) else repr(float(value))


def _cell(text: str | None) -> str:
    """A markdown table cell; a missing second text (None, NaN) is empty."""
    return text.replace("|", "\\|").replace("\n", " ") if isinstance(text, str) else ""


def _level(alpha: float) -> str:
    return f"{(1 - alpha) * 100:g}%"


@dataclass(frozen=True)
class GateResult:
    code: str  # promoted, not-better, not-significant or collapsed
    promoted: bool
    reason: str  # one line
    metric: str
    challenger: float
    incumbent: float
    incumbent_name: str  # "champion v3", "majority-class predictor", "constant-mean predictor"
    delta: float  # > 0 is better: challenger - incumbent, or incumbent - challenger for a loss
    ci_low: float  # the (1 - alpha) paired-bootstrap interval of delta
    ci_high: float
    p_value: float | None  # McNemar's exact test, for accuracy only
    alpha: float
    resamples: int
    seed: int
    examples: int
    min_delta: float
    flips: Flips | None  # classifiers only

    def tags(self) -> dict[str, str]:
        """Flat MLflow tags, gate.<field>: numbers as repr, a missing one "none"."""
        right, wrong = (self.flips.right, self.flips.wrong) if self.flips else (None, None)
        names = ("code", "metric", "incumbent_name", "challenger", "incumbent", "delta",
                 "ci_low", "ci_high", "p_value", "alpha", "min_delta", "resamples", "seed",
                 "examples")
        values = {name: getattr(self, name) for name in names}
        values |= {"flips_right": right, "flips_wrong": wrong}
        return {f"gate.{key}": value if isinstance(value, str) else _num(value)
                for key, value in values.items()}

    def markdown(self, title: str) -> str:
        """The decision, both scores, the gain with its interval and p-value, and the flips."""
        p = "-" if self.p_value is None else f"{self.p_value:.3g}"
        lines = [f"# {title}", "", f"Decision `{self.code}`: {self.reason}", "",
                 f"| | {self.metric} |", "|---|---|", f"| challenger | {self.challenger:.4f} |",
                 f"| {self.incumbent_name} | {self.incumbent:.4f} |",
                 f"| gain (> 0 is better) | {self.delta:+.4f} |",
                 f"| {_level(self.alpha)} interval | {self.ci_low:+.4f} .. {self.ci_high:+.4f} |",
                 f"| McNemar p | {p} |", "",
                 (f"{self.examples} evaluation examples, {self.resamples} paired bootstrap "
                  f"resamples (seed {self.seed}), alpha {self.alpha:g}, min_delta "
                  f"{self.min_delta:g}.")]
        if self.flips:
            lines += ["", (f"Flips: {self.flips.right} became right, {self.flips.wrong} "
                           "became wrong.")]
            for name, rows in (("right", self.flips.became_right),
                               ("wrong", self.flips.became_wrong)):
                lines += ["", f"Became {name}:", "",
                          "| guid | text_a | text_b | true | before | after |", "|---" * 6 + "|"]
                lines += [f"| {' | '.join(_cell(v) for v in vars(f).values())} |" for f in rows]
        return "\n".join(lines)


def _decision(delta: float, ci_low: float, p_value: float | None, *, collapsed: bool,
              min_delta: float, alpha: float) -> tuple[str, str]:
    """The code and why not, checked in this order; NaN never passes a check."""
    if collapsed:
        return "collapsed", "collapsed"
    if not delta > 0:
        return "not-better", "not better"
    if not delta >= min_delta:
        return "not-better", f"gain below min_delta {min_delta:g}"
    if not ci_low > 0:
        return "not-significant", "the interval reaches 0"
    if p_value is not None and not p_value < alpha:
        return "not-significant", f"McNemar p >= alpha {alpha:g}"
    return "promoted", ""


def judge(truth: np.ndarray, challenger: np.ndarray, incumbent: np.ndarray, *, metric: str,
          labels: tuple[str, ...], positive: int | None, incumbent_name: str, collapsed: bool,
          collapse_reason: str | None, min_delta: float, alpha: float, resamples: int, seed: int,
          guids: Sequence[str] | None = None, text_a: Sequence[str] | None = None,
          text_b: Sequence[str | None] | None = None) -> GateResult:
    """The gate's decision on the challenger's and the incumbent's outputs for the same examples
    (and, given `guids` and `text_a`, a classifier's flips)."""
    truth, challenger, incumbent = map(np.asarray, (truth, challenger, incumbent))
    if not len(truth) == len(challenger) == len(incumbent):
        raise ValueError(f"the gate needs outputs for the same examples: {len(truth)} true, "
                         f"{len(challenger)} challenger, {len(incumbent)} incumbent")

    def score(t, o):
        return metric_value(metric, t, o, labels, positive)

    values = score(truth, challenger), score(truth, incumbent)
    low, high = paired_bootstrap(truth, challenger, incumbent, score, resamples, seed, alpha)
    sign = -1.0 if lower_is_better(metric) else 1.0
    delta, (ci_low, ci_high) = sign * (values[0] - values[1]), sorted((sign * low, sign * high))
    p_value, changed = None, None
    if labels:
        before, after = incumbent.argmax(axis=1), challenger.argmax(axis=1)
        p_value = mcnemar_exact(before == truth, after == truth) if metric == "accuracy" else None
        if guids is not None and text_a is not None:
            names = ([labels[i] for i in ids] for ids in (truth, before, after))
            changed = flips(guids, text_a, text_b, *names)
    code, why = _decision(delta, ci_low, p_value, collapsed=collapsed, min_delta=min_delta,
                          alpha=alpha)
    compared = (f"{metric} {values[0]:.4f} vs {incumbent_name} {values[1]:.4f}, {delta:+.4f}"
                f"{' lower' if sign < 0 else ''} ({_level(alpha)} CI {ci_low:+.4f}..{ci_high:+.4f})"
                + ("" if p_value is None else f", McNemar p={p_value:.2g}"))
    reason = (f"promoted: {compared}" if code == "promoted" else
              f"not promoted: collapsed ({collapse_reason})" if code == "collapsed" else
              f"not promoted: {compared}: {why}")
    return GateResult(code, code == "promoted", reason, metric, values[0], values[1],
                      incumbent_name, delta, ci_low, ci_high, p_value, float(alpha),
                      int(resamples), int(seed), len(truth), float(min_delta), changed)
