"""The model card a registered version carries, built from an evaluate report as the register
stage holds it: what a reader learns about the task, the data, the numbers and their
uncertainty, the calibration and decision rule, the limits, and how to serve it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy.special import softmax

from tasks.calibration import Calibration, calibrate_report
from tasks.config import RegistryConfig
from tasks.gate import metric_value
from tasks.model_card import bootstrap_intervals, card_for
from tasks.records import EvalReport, ModelVersion, TrainedModel
from tasks.report import write_predictions

LINEAGE = {"task": "mrpc", "drop": "2026-11-30", "data.digest": "d" * 64,
           "training.key": "k" * 64, "sha256.train.tsv": "a" * 64, "sha256.dev.tsv": "b" * 64,
           "sha256.checkpoint": "c" * 64}
DECISION = ("promoted: f1 0.8300 vs majority-class predictor 0.8122 (+0.0178, 95% interval "
            "+0.0012 .. +0.0350)")


def trained_model(labels=("0", "1"), task="mrpc") -> TrainedModel:
    return TrainedModel(model_dir="/nowhere", model_sha256="e" * 64, steps=345, seconds=60.0,
                        init="checkpoint", max_seq_length=128, do_lower_case=True,
                        labels=labels, task=task, pair=True)


@pytest.fixture
def dev(tmp_path):
    """An overconfident two-class model's 300 dev predictions as evaluate writes them, the
    shards' manifest, and the training data's profile (1 in 8 examples truncated)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 2)) * 1.5
    truth = np.array([rng.choice(2, p=row) for row in softmax(logits, axis=1)])
    outputs = softmax(logits * 3, axis=1)
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    write_predictions([f"dev-{i}" for i in range(300)], truth, outputs, ("0", "1"),
                      report_dir / "dev_predictions.tsv")
    metrics = {"accuracy": 0.7, "f1": 0.7, "mcc": 0.4, "roc_auc": 0.8, "loss": 0.9,
               "examples": 300.0}
    report = EvalReport(report_dir=str(report_dir), metrics=metrics, confusion_matrix=[],
                        collapsed=False)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"labels": ["0", "1"], "positive": "1"}))
    profile = tmp_path / "profile" / "profile.json"
    profile.parent.mkdir()
    profile.write_text(json.dumps({"truncated_share": 0.125, "rows": 8}))
    return {"report": report, "truth": truth, "outputs": outputs, "manifest": str(manifest),
            "profile": str(profile)}


def card(dev, calibration: Calibration, cfg=RegistryConfig(bootstrap_resamples=1000),
         trained=None, lineage=LINEAGE) -> str:
    version = ModelVersion(name="bertflow-mrpc", version="3", run_id="r", aliases=(),
                           promoted=True, decision=DECISION, metric="f1", value=0.83)
    return card_for(version, trained or trained_model(), dev["report"], calibration, lineage, cfg,
                    {"task.name": "mrpc"}, [dev["profile"]], dev["manifest"])


def row(text: str, metric: str) -> list[str]:
    [line] = [line for line in text.splitlines() if line.startswith(f"| {metric} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_card_names_the_version_its_decision_task_and_lineage(dev):
    calibration = calibrate_report(dev["report"].report_dir, ("0", "1"))
    text = card(dev, calibration)
    lines = text.splitlines()
    assert lines[0] == "# bertflow-mrpc v3" and lines[2] == DECISION
    assert "MRPC: is sentence B a paraphrase of sentence A?" in text
    assert "The positive class is `1`" in text and "from checkpoint for 345 steps" in text
    for key in ("drop", "data.digest", "training.key", "sha256.train.tsv", "sha256.dev.tsv",
                "sha256.checkpoint"):
        assert row(text, key) == [key, f"`{LINEAGE[key]}`"]
    assert "| task |" not in text  # the task has its own section
    assert len(lines) < 200


def test_dev_metrics_carry_seeded_bootstrap_intervals_around_the_served_values(dev):
    calibration = calibrate_report(dev["report"].report_dir, ("0", "1"))
    text = card(dev, calibration)
    assert [row(text, m)[0] for m in ("accuracy", "mcc", "f1", "roc_auc", "loss")]
    served = softmax(np.log(np.maximum(dev["outputs"].round(6), 5e-7)) / calibration.temperature,
                     axis=1)
    for metric in ("accuracy", "f1", "loss"):
        _, value, interval = row(text, metric)
        low, high = map(float, interval.split(" .. "))
        expected = metric_value(metric, dev["truth"], served, ("0", "1"), 1)
        assert float(value) == pytest.approx(expected, abs=5e-5)
        assert low < float(value) < high and high - low > 0.02  # 300 rows: not a point
    assert "1000 resamples, seed 20261130" in text
    assert card(dev, calibration) == text  # seeded
    other = card(dev, calibration, RegistryConfig(bootstrap_resamples=1000, seed=1))
    assert row(other, "accuracy")[2] != row(text, "accuracy")[2]


def test_calibration_threshold_and_limits_are_spelled_out(dev):
    calibration = calibrate_report(dev["report"].report_dir, ("0", "1"))
    text = card(dev, calibration)
    assert f"Temperature T = {calibration.temperature:.4g}" in text
    assert calibration.temperature == pytest.approx(3, rel=0.25)  # the model's overconfidence
    assert row(text, "ECE (15 equal-width bins)") == [
        "ECE (15 equal-width bins)", f"{calibration.ece_before:.4f}",
        f"{calibration.ece_after:.4f}"]
    assert f"`1` when its calibrated probability is at least {calibration.threshold:.4g}" in text
    assert "max_f1: dev F1" in text
    assert "at most 128 wordpieces" in text and "12.5% of its training examples" in text
    assert "fitted on dev, which is also the evaluation set" in text
    assert "English (GLUE)" in text and "Lower-cased" in text


def test_the_card_gives_the_commands_that_serve_this_version(dev):
    text = card(dev, Calibration())
    assert ("mlflow models serve -m models:/bertflow-mrpc/3 --env-manager local -h 127.0.0.1 "
            "-p 5001") in text
    assert "bertflow score --input FILE --output FILE.parquet --model-uri models:/bertflow-mrpc/3" \
        in text
    assert "None fitted (not calibrated)" in text and "fitted on dev, which" not in text


def test_an_uncalibrated_card_reports_evaluate_s_own_numbers(dev):
    text = card(dev, Calibration(), lineage={})
    _, value, _ = row(text, "loss")
    written = dev["outputs"].round(6)  # dev_predictions.tsv's 6 decimals
    assert float(value) == pytest.approx(metric_value("loss", dev["truth"], written, ("0", "1"),
                                                      1), abs=5e-5)
    assert "No lineage was recorded" in text


def test_bootstrap_intervals_narrow_with_more_rows():
    rng = np.random.default_rng(3)
    widths = []
    for rows in (50, 2000):
        truth = rng.integers(0, 2, rows)
        right = rng.random(rows) < 0.8
        outputs = np.eye(2)[np.where(right, truth, 1 - truth)]
        [interval] = bootstrap_intervals(truth, outputs, ("0", "1"), 1, ("accuracy",), 1000, 0)
        assert interval.low <= interval.value <= interval.high
        widths.append(interval.high - interval.low)
    assert widths[1] < widths[0] / 3


def test_a_regression_card_lists_correlations_and_no_calibration(tmp_path, dev):
    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 5, 80)
    scores = truth + rng.normal(0, 0.5, 80)
    write_predictions([f"dev-{i}" for i in range(80)], truth, scores, (),
                      tmp_path / "dev_predictions.tsv")
    report = EvalReport(report_dir=str(tmp_path), metrics={"pearson": 0.9, "spearman": 0.9,
                        "mse": 0.25}, confusion_matrix=[], collapsed=False)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"positive": None}))
    regression = calibrate_report(str(tmp_path), ())
    text = card({**dev, "report": report, "manifest": str(manifest)}, regression,
                trained=trained_model((), "stsb"))
    assert [row(text, m)[0] for m in ("pearson", "spearman", "mse")]
    assert "answers a score (regression)" in text and "positive class" not in text
    assert "None fitted (regression: scores are not calibrated)" in text
    assert re.search(r"\| pearson \| 0\.9\d+ \| 0\.\d+ \.\. 0\.\d+ \|", text)
