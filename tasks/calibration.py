"""Calibrated decisions, fitted on dev: a temperature for the probabilities and, for two classes,
a decision threshold on the positive class (labels[1]).

    temperature   T minimising the negative log-likelihood of softmax(log p / T) on dev, where p
                  are the evaluate stage's dev probabilities (dev_predictions.tsv, p_<label>);
                  log p are the logits up to a per-row constant, which softmax ignores
    threshold     on the calibrated P(labels[1]): "max_f1" (the one maximising dev F1),
                  "precision" (the lowest whose dev precision reaches target_precision) or
                  "argmax" (none: the likeliest class)
    ECE, Brier    before and after, so that the gain is on record

The served model (tasks/pyfunc_model.py) applies both from model_config.json. Regression tasks
are not calibrated.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.metrics import precision_recall_curve

BINS = 15  # equal-width confidence bins of the expected calibration error (Guo et al., 2017)
PROBABILITY_FLOOR = 5e-7  # half the TSV's last decimal: a written 0.000000 was below it
T_BOUNDS = (0.1, 20.0)  # searched: past any temperature a real model needs; at 0.1 the TSV's
# rounding grows at most tenfold (tasks/parity.py)
RULES = ("max_f1", "precision", "argmax")


def calibrated(probabilities: np.ndarray, temperature: float,
               floor: float = PROBABILITY_FLOOR) -> np.ndarray:
    """softmax(log p / T) row-wise, p clipped below at `floor` (a 0 has no logarithm; floor 0
    keeps it 0). T = 1 gives p back, renormalised; 1 / T undoes T.

    >>> calibrated(np.array([[0.2, 0.8]]), 2.0).round(4).tolist()
    [[0.3333, 0.6667]]
    >>> calibrated(calibrated(np.array([[0.1, 0.9]]), 3.0), 1 / 3.0).round(6).tolist()
    [[0.1, 0.9]]
    """
    p = np.asarray(probabilities, np.float64)
    with np.errstate(divide="ignore"):
        z = np.log(np.maximum(p, floor)) / temperature
    return np.exp(log_softmax(z, axis=1))


def at_temperature(outputs: np.ndarray, labels: tuple[str, ...],
                   temperature: float) -> np.ndarray:
    """A model's outputs as it serves them at `temperature`: a classifier's probabilities
    calibrated (untouched at 1.0, as a regressor's scores always are)."""
    return calibrated(outputs, temperature) if labels and temperature != 1.0 else outputs


def _nll(logits: np.ndarray, truth: np.ndarray, temperature: float) -> float:
    return float(-np.mean(log_softmax(logits / temperature, axis=1)[np.arange(len(truth)),
                                                                      truth]))


def fit_temperature(logits: np.ndarray, truth: np.ndarray) -> float:
    """The T in T_BOUNDS minimising the mean NLL of softmax(logits / T) (bounded search over
    log T; a dev set the model gets all right would drive T to 0).

    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(20000, 2)) * 2  # logits, and labels drawn as they say
    >>> y = (rng.random(20000) < np.exp(log_softmax(z, axis=1))[:, 1]).astype(int)
    >>> round(fit_temperature(z * 3, y), 1)  # overconfident by 3
    3.1
    """
    logits, truth = np.asarray(logits, np.float64), np.asarray(truth, np.int64)
    found = minimize_scalar(lambda log_t: _nll(logits, truth, np.exp(log_t)), method="bounded",
                            bounds=np.log(T_BOUNDS), options={"xatol": 1e-6})
    return float(np.exp(found.x))


def reliability_bins(probabilities: np.ndarray, truth: np.ndarray,
                     bins: int = BINS) -> pd.DataFrame:
    """Per equal-width bin of the confidence (the top probability), bin i holding (i/bins,
    (i+1)/bins]: count, mean confidence and accuracy (NaN where empty)."""
    p, truth = np.asarray(probabilities, np.float64), np.asarray(truth, np.int64)
    confidence, right = p.max(axis=1), p.argmax(axis=1) == truth
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    frame = pd.DataFrame({"bin": which, "confidence": confidence, "accuracy": right})
    grouped = frame.groupby("bin").agg(count=("accuracy", "size"),
                                       confidence=("confidence", "mean"),
                                       accuracy=("accuracy", "mean"))
    return grouped.reindex(range(bins)).fillna({"count": 0}).astype({"count": int})


def expected_calibration_error(probabilities: np.ndarray, truth: np.ndarray,
                               bins: int = BINS) -> float:
    """The standard ECE (Guo et al., 2017): sum over equal-width confidence bins of
    count / n * |accuracy - mean confidence|.

    >>> expected_calibration_error(np.array([[0.1, 0.9]] * 10), np.array([1] * 9 + [0]))
    0.0
    >>> p = np.array([[0.1, 0.9]] * 10)
    >>> round(expected_calibration_error(p, np.array([1] * 5 + [0] * 5)), 3)
    0.4
    """
    table = reliability_bins(probabilities, truth, bins).dropna()
    gaps = (table["accuracy"] - table["confidence"]).abs()
    return float((table["count"] * gaps).sum() / max(table["count"].sum(), 1))


def brier_score(probabilities: np.ndarray, truth: np.ndarray) -> float:
    """Multi-class Brier score: the mean over rows of the sum over classes of (p - one-hot)^2.

    >>> round(brier_score(np.array([[0.2, 0.8], [1.0, 0.0]]), np.array([1, 0])), 6)
    0.04
    """
    p = np.asarray(probabilities, np.float64)
    return float(np.mean(np.sum((p - np.eye(p.shape[1])[truth]) ** 2, axis=1)))


def decision_threshold(p_positive: np.ndarray, is_positive: np.ndarray, rule: str,
                       target_precision: float) -> tuple[float | None, str]:
    """The threshold on P(positive) that `rule` picks on dev, and a note on what it did: the
    highest F1 ("max_f1"), the lowest threshold reaching `target_precision` ("precision"; none
    reaching it falls back to argmax), or none ("argmax").

    >>> p, y = np.array([0.1, 0.3, 0.4, 0.6, 0.8, 0.9]), np.array([0, 1, 0, 1, 1, 1])
    >>> decision_threshold(p, y, "max_f1", 0.9)
    (0.3, 'max_f1: dev F1 0.8889 at P >= 0.3')
    >>> decision_threshold(p, y, "precision", 0.9)
    (0.6, 'precision: dev precision 1.0000 >= 0.9 at P >= 0.6, recall 0.7500')
    >>> decision_threshold(p, 1 - y, "precision", 0.9)[1]
    'warning: no threshold reaches dev precision 0.9 (best 0.3333); argmax instead'
    """
    if rule not in RULES:
        raise ValueError(f"no threshold rule {rule!r}: one of {', '.join(RULES)}")
    is_positive = np.asarray(is_positive, bool)
    if rule == "argmax":
        return None, "argmax: no threshold"
    if is_positive.all() or not is_positive.any():
        return None, "warning: dev holds one class, no threshold can be fitted; argmax instead"
    precision, recall, thresholds = precision_recall_curve(is_positive, p_positive)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    if rule == "max_f1":
        f1 = np.divide(2 * precision * recall, precision + recall,
                       out=np.zeros_like(precision), where=precision + recall > 0)
        best = int(np.argmax(f1))  # thresholds rise: the lowest of equal F1s
        return float(thresholds[best]), (f"max_f1: dev F1 {f1[best]:.4f} at P >= "
                                         f"{thresholds[best]:.4g}")
    reached = np.flatnonzero(precision >= target_precision)
    if not len(reached):
        return None, (f"warning: no threshold reaches dev precision {target_precision:g} "
                      f"(best {precision.max():.4f}); argmax instead")
    i = int(reached[0])
    return float(thresholds[i]), (f"precision: dev precision {precision[i]:.4f} >= "
                                  f"{target_precision:g} at P >= {thresholds[i]:.4g}, recall "
                                  f"{recall[i]:.4f}")


@dataclass(frozen=True)
class Calibration:
    """What was fitted on dev, and how much it helped. The defaults: nothing fitted."""

    temperature: float = 1.0
    threshold: float | None = None
    rule: str = "none"  # max_f1, precision, argmax; none: not calibrated
    target_precision: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    brier_before: float | None = None
    brier_after: float | None = None
    examples: int = 0
    note: str = "not calibrated"

    def config(self) -> dict[str, object]:
        """The served model's model_config.json keys."""
        return {"temperature": self.temperature, "threshold": self.threshold}

    def tags(self) -> dict[str, str]:
        """
        >>> Calibration(temperature=1.5, rule="argmax").tags()["calibration.threshold"]
        'none'
        """
        return {"calibration.temperature": repr(self.temperature),
                "calibration.threshold": "none" if self.threshold is None
                else repr(self.threshold), "calibration.rule": self.rule}

    def metrics(self) -> dict[str, float]:
        """calibration_ece_before ... calibration_brier_after, those that were measured."""
        names = ("ece_before", "ece_after", "brier_before", "brier_after")
        return {f"calibration_{n}": getattr(self, n) for n in names
                if getattr(self, n) is not None}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @property
    def line(self) -> str:
        """
        >>> Calibration(1.5, None, "argmax", None, 0.1, 0.02, 0.3, 0.25, 408, "argmax").line
        'temperature 1.5 on 408 dev examples: ECE 0.1000 -> 0.0200, Brier 0.3000 -> 0.2500'
        """
        if self.ece_before is None:
            return self.note
        return (f"temperature {self.temperature:.4g} on {self.examples} dev examples: ECE "
                f"{self.ece_before:.4f} -> {self.ece_after:.4f}, Brier {self.brier_before:.4f}"
                f" -> {self.brier_after:.4f}")


def calibrate(probabilities: np.ndarray, truth: np.ndarray, labels: tuple[str, ...],
              rule: str = "max_f1", target_precision: float = 0.9) -> Calibration:
    """Fit the temperature on dev probabilities and, for two classes, the threshold on
    P(labels[1]); a regression task (no labels) is left as it is."""
    if not labels:
        return Calibration(note="regression: scores are not calibrated")
    p, truth = np.asarray(probabilities, np.float64), np.asarray(truth, np.int64)
    temperature = fit_temperature(np.log(np.maximum(p, PROBABILITY_FLOOR)), truth)
    after = calibrated(p, temperature)
    threshold, note = None, "threshold: two classes only; argmax"
    if len(labels) == 2:
        threshold, note = decision_threshold(after[:, 1], truth == 1, rule, target_precision)
    if min(abs(np.log(temperature / bound)) for bound in T_BOUNDS) < 1e-4:
        note = f"warning: the temperature reached its bound {temperature:.3g}; {note}"
    return Calibration(temperature, threshold, rule if len(labels) == 2 else "argmax",
                       target_precision if rule == "precision" else None,
                       expected_calibration_error(p, truth),
                       expected_calibration_error(after, truth),
                       brier_score(p, truth), brier_score(after, truth), len(truth), note)


def dev_outputs(report_dir: str, labels: tuple[str, ...]) -> tuple[pd.Series, np.ndarray,
                                                                   np.ndarray]:
    """guid, probabilities (n, k) and label ids of evaluate's dev_predictions.tsv; for a
    regression task the scores (n,) and true scores."""
    frame = pd.read_csv(Path(report_dir) / "dev_predictions.tsv", sep="\t",
                        dtype={"guid": str, "label": str}, keep_default_na=False, quoting=3)
    columns = [f"p_{label}" for label in labels] or ["score"]
    missing = [c for c in ("guid", "label", *columns) if c not in frame.columns]
    if missing:
        raise ValueError(f"{report_dir}/dev_predictions.tsv has no column {', '.join(missing)}")
    values = frame[columns].to_numpy(np.float64)
    if not labels:
        return frame["guid"], values[:, 0], frame["label"].astype(np.float64).to_numpy()
    index = {label: i for i, label in enumerate(labels)}
    return frame["guid"], values, frame["label"].map(index).to_numpy(np.int64)


def calibrate_report(report_dir: str, labels: tuple[str, ...], rule: str = "max_f1",
                     target_precision: float = 0.9) -> Calibration:
    """`calibrate` on the evaluate stage's dev predictions."""
    if not labels:
        return calibrate(np.zeros((0, 0)), np.zeros(0), labels)
    _, probabilities, truth = dev_outputs(report_dir, labels)
    return calibrate(probabilities, truth, labels, rule, target_precision)


def write_files(calibration: Calibration, report_dir: str, labels: tuple[str, ...],
                folder: Path) -> list[Path]:
    """calibration.json, and reliability.png where a temperature was fitted, in `folder`."""
    files = [folder / "calibration.json"]
    files[0].write_text(calibration.to_json())
    if calibration.ece_before is not None:
        _, probabilities, truth = dev_outputs(report_dir, labels)
        files.append(plot_reliability(probabilities, truth, calibration.temperature,
                                      folder / "reliability.png"))
    return files


def plot_reliability(probabilities: np.ndarray, truth: np.ndarray, temperature: float,
                     path: Path) -> Path:
    """Accuracy against mean confidence per bin, before and after the temperature, beside the
    diagonal where a calibrated model's bins lie; below, the examples per bin."""
    fig = Figure(figsize=(5, 5.4), layout="constrained")
    ax, counts = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    edges = np.linspace(0, 1, BINS + 1)
    for name, p, marker, offset in (("before", probabilities, "o", -0.25),
                                    (f"after (T = {temperature:.3g})",
                                     calibrated(probabilities, temperature), "s", 0.25)):
        table = reliability_bins(p, truth)
        ece = expected_calibration_error(p, truth)
        ax.plot(table["confidence"], table["accuracy"], marker + "-",
                label=f"{name}: ECE {ece:.3f}")
        counts.bar(edges[:-1] + (0.5 + offset / 2) / BINS, table["count"], width=0.5 / BINS,
                   label=name)
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02), title="Reliability on dev")
    ax.legend(loc="upper left")
    counts.set(xlabel="confidence (top probability)", ylabel="examples")
    fig.savefig(path, format="png", dpi=100)
    return path
