"""The gate's evidence and verdict: the new version against the incumbent on one evaluation set.

    Evidence   what the flow gathered before registering: the evaluation examples, the champion
               and its served outputs on them (or, with none, the training data's constant
               predictor), the shards' manifest (labels, positive class), the run's lineage
    verdict    parity first (tasks/parity.py: the version served from a new process answers as
               evaluate did, at its temperature), then the significance test (tasks/gate.py) on
               the challenger's calibrated outputs, as it serves them; the champion's come from
               its own served model, calibrated as it was registered
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.calibration import Calibration, at_temperature
from tasks.config import RegistryConfig
from tasks.gate import constant_outputs, judge
from tasks.incumbent import Examples, Incumbent, Scores
from tasks.parity import check_parity, evaluated_outputs
from tasks.promotion import Verdict
from tasks.records import EvalReport, TrainedModel, _Record


class Evidence(_Record):
    examples: Examples
    incumbent: Incumbent | None = None
    scores: Scores | None = None  # the incumbent's outputs on the examples
    manifest: str  # the shards' manifest.json: labels, positive class
    baseline_label: str | None = None  # the training data's majority class (classifiers)
    baseline_score: float | None = None  # its mean score (regression)
    lineage: dict[str, str] = {}  # drop, data.digest, training.key: tagged on the version


def truth_of(frame: pd.DataFrame, labels: tuple[str, ...]) -> np.ndarray:
    """Label ids in the order of `labels` (class names), or scores for a regression task.

    >>> truth_of(pd.DataFrame({"label": ["b", "a", "b"]}), ("a", "b")).tolist()
    [1, 0, 1]
    """
    if not labels:
        return frame["label"].astype(np.float64).to_numpy()
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index[str(label)] for label in frame["label"]], dtype=np.int64)


def incumbent_outputs(evidence: Evidence, guids: list[str], labels: tuple[str, ...]
                      ) -> tuple[np.ndarray, str]:
    """The incumbent's outputs for `guids` and its name in the decision."""
    if evidence.incumbent is not None:
        if evidence.scores is None:
            raise ValueError(f"{evidence.incumbent.label} has no scores on the evaluation set")
        frame = pd.read_parquet(evidence.scores.path).astype({"guid": str}).set_index("guid")
        columns = [f"p_{label}" for label in labels] or ["score"]
        values = frame.loc[guids, columns].to_numpy(np.float64)
        return (values if labels else values[:, 0]), evidence.incumbent.label
    if labels:
        majority = labels.index(evidence.baseline_label)
        return (constant_outputs(len(guids), labels, majority, None),
                "majority-class predictor")
    return (constant_outputs(len(guids), labels, None, evidence.baseline_score),
            "constant-mean predictor")


def verdict(model_uri: str, tracking_uri: str, trained: TrainedModel, report: EvalReport,
            evidence: Evidence, cfg: RegistryConfig,
            calibration: Calibration = Calibration()) -> Verdict:
    """Parity of the served version, then the gate against the incumbent."""
    frame = pd.read_parquet(evidence.examples.path)
    guids = frame["guid"].astype(str).tolist()
    labels = trained.labels
    parity = check_parity(model_uri, tracking_uri, evidence.examples.path, report.report_dir,
                          labels, cfg.parity_tolerance, calibration.temperature)
    parity_tags = {"parity.max_abs_difference": repr(parity.max_abs_difference),
                   "parity.examples": str(parity.examples)}
    challenger = at_temperature(evaluated_outputs(report.report_dir, guids, labels), labels,
                                calibration.temperature)  # as the version serves them
    incumbent, incumbent_name = incumbent_outputs(evidence, guids, labels)
    if not parity.ok:
        line = f"not promoted: parity failed: {parity.line}"
        return Verdict("parity-failed", line, float("nan"), incumbent_name, None,
                       f"# {model_uri}: parity failed\n\n{parity.line}\n",
                       {**parity_tags, **evidence.lineage})
    positive = json.loads(Path(evidence.manifest).read_text()).get("positive")
    result = judge(truth_of(frame, labels), challenger, incumbent, metric=cfg.promote_metric,
                   labels=labels, positive=None if positive is None else labels.index(positive),
                   incumbent_name=incumbent_name, collapsed=report.collapsed,
                   collapse_reason=report.collapse_reason, min_delta=cfg.min_delta,
                   alpha=cfg.alpha, resamples=cfg.bootstrap_resamples, seed=cfg.seed,
                   guids=guids, text_a=frame["text_a"].tolist(), text_b=frame["text_b"].tolist())
    markdown = result.markdown(f"{model_uri}: {result.code}") + f"\n\nServing: {parity.line}.\n"
    return Verdict(result.code, result.reason, result.challenger, incumbent_name,
                   result.incumbent, markdown,
                   {**result.tags(), **parity_tags, **evidence.lineage})
