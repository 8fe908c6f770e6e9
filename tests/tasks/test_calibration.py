"""Calibration fitted on dev: the temperature a known overconfidence needs, the calibration error
it removes, the decision threshold each rule picks, and what is recorded when a rule cannot be
met; on dev predictions as the evaluate stage writes them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import softmax

from tasks.calibration import (Calibration, brier_score, calibrate, calibrate_report, calibrated,
                               decision_threshold, expected_calibration_error, plot_reliability)
from tasks.report import write_predictions

LABELS = ("0", "1")


def drawn(rows: int, classes: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): a perfectly calibrated model's dev."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(rows, classes)) * 1.5
    p = softmax(logits, axis=1)
    truth = np.array([rng.choice(classes, p=row) for row in p])
    return logits, truth


def test_an_overconfident_model_gets_its_temperature_back_and_loses_its_calibration_error():
    logits, truth = drawn(6000)
    overconfident = softmax(logits * 3, axis=1)
    record = calibrate(overconfident, truth, LABELS, rule="argmax")
    assert record.temperature == pytest.approx(3.0, rel=0.1)
    assert record.ece_before > 0.1 and record.ece_after < 0.03
    assert record.brier_after < record.brier_before
    assert record.examples == 6000 and record.threshold is None and record.rule == "argmax"
    np.testing.assert_allclose(calibrated(overconfident, record.temperature, floor=0),
                               softmax(logits * 3 / record.temperature, axis=1), atol=1e-9)
    assert record.config() == {"temperature": record.temperature, "threshold": None}
    assert set(record.metrics()) == {"calibration_ece_before", "calibration_ece_after",
                                     "calibration_brier_before", "calibration_brier_after"}


def test_a_calibrated_model_keeps_a_temperature_near_one():
    logits, truth = drawn(6000, classes=3, seed=1)
    record = calibrate(softmax(logits, axis=1), truth, ("a", "b", "c"))
    assert record.temperature == pytest.approx(1.0, abs=0.08)
    assert record.threshold is None and "two classes only" in record.note  # three classes


def test_the_temperature_keeps_every_argmax_decision():
    logits, truth = drawn(500)
    p = softmax(logits * 2, axis=1)
    assert (calibrated(p, 2.0).argmax(1) == p.argmax(1)).all()


P = np.array([0.05, 0.2, 0.35, 0.45, 0.55, 0.7, 0.8, 0.95])
Y = np.array([0, 0, 1, 0, 1, 1, 0, 1])


def test_max_f1_picks_the_threshold_of_the_best_dev_f1():
    threshold, note = decision_threshold(P, Y, "max_f1", 0.9)
    assert threshold == 0.35  # predicts 6 positive, 4 right: F1 2*4/(6+4) = 0.8
    f1 = {t: 2 * ((P >= t) & (Y == 1)).sum() / ((P >= t).sum() + Y.sum()) for t in P}
    assert f1[threshold] == max(f1.values()) == 0.8 and f1[0.55] < 0.8  # argmax (0.5) is worse
    assert note == "max_f1: dev F1 0.8000 at P >= 0.35"


def test_the_precision_rule_takes_the_lowest_threshold_that_reaches_the_target():
    assert decision_threshold(P, Y, "precision", 0.75)[0] == 0.55  # 3 of 4 from 0.55 up
    assert decision_threshold(P, Y, "precision", 0.9)[0] == 0.95  # only the top one is sure
    assert decision_threshold(P, Y, "argmax", 0.9) == (None, "argmax: no threshold")


def test_an_unreachable_precision_falls_back_to_argmax_with_a_warning():
    record = calibrate(np.stack([1 - P, P], axis=1), 1 - Y, LABELS, "precision", 0.9)
    assert record.threshold is None and record.config()["threshold"] is None
    assert "warning: no threshold reaches dev precision 0.9" in record.note  # anticorrelated
    assert record.rule == "precision" and record.target_precision == 0.9
    assert record.tags()["calibration.threshold"] == "none"


def test_one_class_on_dev_fits_no_threshold():
    threshold, note = decision_threshold(P, np.ones(len(P)), "max_f1", 0.9)
    assert threshold is None and "one class" in note


def test_a_regression_task_is_not_calibrated():
    record = calibrate(np.zeros((0, 0)), np.zeros(0), ())
    assert record.config() == {"temperature": 1.0, "threshold": None}
    assert record.note == "regression: scores are not calibrated" and record.metrics() == {}
    assert Calibration().line == "not calibrated"


def test_ece_and_brier_by_hand():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    truth = np.array([0, 1, 1, 1])
    # bins (13/15, 14/15]: 0.9 right; (11/15, 12/15]: 0.8 wrong; (10/15, 11/15]: 0.7 right;
    # (8/15, 9/15]: 0.6 right -> (0.1 + 0.8 + 0.3 + 0.4) / 4
    assert expected_calibration_error(p, truth) == pytest.approx(0.4)
    assert brier_score(p, truth) == pytest.approx((0.02 + 1.28 + 0.18 + 0.32) / 4)


def test_dev_predictions_as_evaluate_writes_them_zeros_included(tmp_path):
    logits, truth = drawn(400, seed=2)
    p = softmax(logits * 40, axis=1)  # many probabilities print as 0.000000
    guids = [f"dev-{i}" for i in range(len(truth))]
    write_predictions(guids, truth, p, LABELS, tmp_path / "dev_predictions.tsv")
    assert "\t0.000000\t" in (tmp_path / "dev_predictions.tsv").read_text()
    record = calibrate_report(str(tmp_path), LABELS)
    assert np.isfinite(record.temperature) and record.temperature > 5
    assert record.ece_after < record.ece_before and record.examples == 400
    assert record.rule == "max_f1" and 0 < record.threshold < 1
    assert json.loads(record.to_json())["temperature"] == record.temperature
    png = plot_reliability(p, truth, record.temperature, tmp_path / "reliability.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_dev_predictions_without_probabilities_are_refused(tmp_path):
    (tmp_path / "dev_predictions.tsv").write_text("index\tlabel\tprobability\n0\t1\t0.9\n")
    with pytest.raises(ValueError, match="no column guid, p_0, p_1"):
        calibrate_report(str(tmp_path), LABELS)


def test_a_dev_set_the_model_gets_all_right_stops_the_temperature_at_its_bound():
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    record = calibrate(p, np.array([0, 1, 0]), LABELS, rule="argmax")
    assert record.temperature == pytest.approx(0.1, rel=1e-3)
    assert record.note.startswith("warning: the temperature reached its bound 0.1")
