"""The promotion gate's statistics on small hand-made evaluation sets: each metric as the evaluate
stage computes it, the bootstrap interval recomputed independently, McNemar's p by hand, the
flips, and every decision the gate can reach."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tasks.gate import (constant_outputs, flips, judge, mcnemar_exact, metric_value,
                        paired_bootstrap)
from tasks.metrics import split_metrics
from tests.tasks.eval_fixtures import MRPC, NLI

N = 400


def outputs_right_on(truth: np.ndarray, right: np.ndarray, classes: int = 2,
                     confidence: float = 0.8) -> np.ndarray:
    """Probabilities that put `confidence` on the true class where `right`, else on the next."""
    predicted = np.where(right, truth, (truth + 1) % classes)
    probs = np.full((len(truth), classes), (1 - confidence) / (classes - 1))
    probs[np.arange(len(truth)), predicted] = confidence
    return probs


def binary_set(seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, N)


def gate(truth, challenger, incumbent, metric="accuracy", labels=MRPC, positive=1, **kw):
    args = {"metric": metric, "labels": labels, "positive": positive,
            "incumbent_name": "champion v3", "collapsed": False, "collapse_reason": None,
            "min_delta": 0.0, "alpha": 0.05, "resamples": 1000, "seed": 20261130}
    if labels:
        n = range(len(truth))
        args |= {"guids": [f"dev-{i}" for i in n], "text_a": [f"sentence {i}" for i in n],
                 "text_b": [f"other {i}" for i in n]}
    return judge(truth, challenger, incumbent, **(args | kw))


@pytest.mark.parametrize("metric", ["accuracy", "f1", "precision", "recall", "mcc", "macro_f1",
                                    "loss", "roc_auc", "positive_share", "f1_0", "recall_0"])
def test_binary_metric_values_equal_the_evaluate_stage(metric):
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 60)
    p = np.clip(truth * 0.3 + rng.random(60) * 0.7, 0, 1)  # informative, imperfect, some ties
    probs = np.stack([1 - np.round(p, 1), np.round(p, 1)], axis=1)
    expected = split_metrics(truth, probs, MRPC, 1)[metric]
    assert metric_value(metric, truth, probs, MRPC, 1) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("metric", ["accuracy", "mcc", "macro_f1", "loss", "f1_neutral",
                                    "precision_entailment"])
def test_three_class_metric_values_equal_the_evaluate_stage(metric):
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 3, 50)
    probs = rng.dirichlet([1, 1, 1], 50) + np.eye(3)[truth] * 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    expected = split_metrics(truth, probs, NLI, None)[metric]
    assert metric_value(metric, truth, probs, NLI, None) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("metric", ["pearson", "spearman", "mse", "loss"])
def test_regression_metric_values_equal_the_evaluate_stage(metric):
    rng = np.random.default_rng(5)
    truth = np.round(rng.uniform(0, 5, 40), 1)  # STS-B-like scores, with ties
    scores = np.round(truth + rng.normal(0, 1, 40), 1)
    expected = split_metrics(truth, scores, (), None)[metric]
    assert metric_value(metric, truth, scores, (), None) == pytest.approx(expected, rel=1e-12)


def test_a_constant_predictor_scores_zero_correlation_and_mcc_not_nan():
    truth = np.array([0.5, 2.0, 3.5, 4.0])
    constant = constant_outputs(4, (), None, 2.5)
    assert math.isnan(split_metrics(truth, constant, (), None)["pearson"])  # evaluate's NaN
    assert metric_value("pearson", truth, constant, (), None) == 0.0
    assert metric_value("spearman", truth, constant, (), None) == 0.0
    labels = np.array([0, 1, 1, 2])
    majority = constant_outputs(4, NLI, 1, None)
    assert metric_value("mcc", labels, majority, NLI, None) == 0.0
    assert metric_value("accuracy", labels, majority, NLI, None) == 0.5


def test_unknown_metric_is_named():
    with pytest.raises(ValueError, match="no classification metric 'bleu'"):
        metric_value("bleu", [0, 1], np.eye(2), MRPC, 1)
    with pytest.raises(ValueError, match="no regression metric 'f1'"):
        metric_value("f1", [0.0, 1.0], [0.0, 1.0], (), None)


def test_constant_baselines_for_three_classes_and_regression():
    probs = constant_outputs(3, NLI, 2, None)
    assert probs.shape == (3, 3) and probs.tolist() == [[0, 0, 1]] * 3
    assert constant_outputs(3, (), None, 2.7).tolist() == [2.7, 2.7, 2.7]
    with pytest.raises(ValueError, match="majority"):
        constant_outputs(3, NLI, None, 2.7)
    with pytest.raises(ValueError, match="mean"):
        constant_outputs(3, (), 1, None)


def three_class_pair():
    truth = np.random.default_rng(11).integers(0, 3, 120)
    rng = np.random.default_rng(12)
    better = outputs_right_on(truth, rng.random(120) < 0.8, 3)
    worse = outputs_right_on(truth, rng.random(120) < 0.6, 3)
    return truth, better, worse


def test_interval_reproduced_by_an_independent_numpy_loop():
    truth, better, worse = three_class_pair()
    low, high = paired_bootstrap(truth, better, worse,
                                 lambda t, o: metric_value("macro_f1", t, o, NLI, None),
                                 resamples=300, seed=42, alpha=0.1)
    # The documented procedure, with the evaluate stage's own metric and numpy's percentile.
    rng = np.random.default_rng(42)
    idx = rng.integers(0, len(truth), (300, len(truth)))
    deltas = []
    for i in idx:
        deltas.append(split_metrics(truth[i], better[i], NLI, None)["macro_f1"]
                      - split_metrics(truth[i], worse[i], NLI, None)["macro_f1"])
    expected = np.percentile(deltas, [5, 95])
    assert (low, high) == pytest.approx(tuple(expected), abs=1e-12)
    assert 0 < low < high


def test_interval_agrees_with_scipys_bootstrap_of_the_indices():
    truth, better, worse = three_class_pair()

    def delta(i):
        return (metric_value("accuracy", truth[i], better[i], NLI, None)
                - metric_value("accuracy", truth[i], worse[i], NLI, None))

    ours = paired_bootstrap(truth, better, worse,
                            lambda t, o: metric_value("accuracy", t, o, NLI, None), 500, 9, 0.05)
    theirs = stats.bootstrap((np.arange(len(truth)),), delta, n_resamples=500, vectorized=False,
                             method="percentile", confidence_level=0.95,
                             rng=np.random.default_rng(9)).confidence_interval
    assert ours == pytest.approx((theirs.low, theirs.high), abs=1e-12)


def test_same_seed_same_interval_other_seed_another():
    truth, better, worse = three_class_pair()

    def score(t, o):
        return metric_value("accuracy", t, o, NLI, None)

    first = paired_bootstrap(truth, better, worse, score, 1000, 1, 0.05)
    assert paired_bootstrap(truth, better, worse, score, 1000, 1, 0.05) == first
    assert paired_bootstrap(truth, better, worse, score, 1000, 2, 0.05) != first


def test_mcnemar_on_a_known_table():
    # 10 became right, 2 became wrong, 20 right both times: only the 12 discordant pairs count.
    before = np.array([False] * 10 + [True] * 2 + [True] * 20)
    after = np.array([True] * 10 + [False] * 2 + [True] * 20)
    by_hand = 2 * sum(math.comb(12, i) for i in range(3)) / 2 ** 12  # 2 P(X <= 2), X ~ B(12, .5)
    assert by_hand == pytest.approx(158 / 4096)
    assert mcnemar_exact(before, after) == pytest.approx(by_hand, rel=1e-12)
    assert mcnemar_exact(after, before) == pytest.approx(by_hand, rel=1e-12)
    assert mcnemar_exact(before, before) == 1.0


def test_flips_count_and_show_the_first_examples():
    truth = ["yes", "no", "yes", "no", "yes", "no"]
    before = ["no", "no", "no", "no", "yes", "yes"]
    after = ["yes", "no", "yes", "yes", "yes", "no"]
    f = flips([f"g{i}" for i in range(6)], [f"a{i}" for i in range(6)], None, truth, before,
              after, k=1)
    assert (f.right, f.wrong) == (3, 1)  # g0, g2, g5 fixed; g3 broken
    assert [x.guid for x in f.became_right] == ["g0"]  # the first k, in evaluation order
    shown = f.became_wrong[0]
    assert (shown.guid, shown.text_a, shown.text_b, shown.truth, shown.before, shown.after) == (
        "g3", "a3", None, "no", "no", "yes")


def test_a_clearly_better_model_on_400_examples_is_promoted():
    truth = binary_set()
    rng = np.random.default_rng(8)
    result = gate(truth, outputs_right_on(truth, rng.random(N) < 0.9),
                  outputs_right_on(truth, rng.random(N) < 0.75))
    assert result.code == "promoted" and result.promoted
    assert result.delta > 0.1 and 0 < result.ci_low < result.delta < result.ci_high
    assert result.p_value < 1e-4 and result.examples == N
    assert result.reason.startswith("promoted: accuracy 0.")
    assert "vs champion v3" in result.reason and "(95% CI +0." in result.reason
    assert result.flips.right > result.flips.wrong > 0


def test_an_identical_model_is_not_better():
    truth = binary_set()
    probs = outputs_right_on(truth, np.random.default_rng(8).random(N) < 0.85)
    for metric in ("accuracy", "f1"):
        result = gate(truth, probs, probs.copy(), metric=metric)
        assert result.code == "not-better" and not result.promoted
        assert (result.delta, result.ci_low, result.ci_high) == (0.0, 0.0, 0.0)
        assert result.flips.right == result.flips.wrong == 0


def test_a_gain_of_two_examples_is_not_significant():
    truth = binary_set()
    right = np.random.default_rng(8).random(N) < 0.8
    better = right.copy()
    wrong_ones = np.flatnonzero(~right)
    better[wrong_ones[:6]] = True  # six fixed ...
    better[np.flatnonzero(right)[:4]] = False  # ... four broken: +2 of 400
    result = gate(truth, outputs_right_on(truth, better), outputs_right_on(truth, right))
    assert result.delta == pytest.approx(2 / N)
    assert result.code == "not-significant" and result.ci_low <= 0 < result.ci_high
    assert result.p_value == pytest.approx(mcnemar_exact(right, better))
    assert result.reason.endswith(": the interval reaches 0")


def test_five_fixes_and_no_breaks_fail_mcnemar_though_the_interval_clears_zero():
    truth = binary_set()
    right = np.random.default_rng(8).random(N) < 0.8
    better = right.copy()
    better[np.flatnonzero(~right)[:5]] = True
    result = gate(truth, outputs_right_on(truth, better), outputs_right_on(truth, right))
    assert result.ci_low > 0  # no resample can make the challenger worse
    assert result.p_value == pytest.approx(2 / 2 ** 5)  # 5 of 5 discordant: 0.0625
    assert result.code == "not-significant" and "McNemar p >= alpha 0.05" in result.reason
    # F1 has no McNemar test: the interval alone decides.
    assert gate(truth, outputs_right_on(truth, better), outputs_right_on(truth, right),
                metric="f1").code == "promoted"


def test_a_gain_below_min_delta_is_not_better():
    truth = binary_set()
    rng = np.random.default_rng(8)
    result = gate(truth, outputs_right_on(truth, rng.random(N) < 0.9),
                  outputs_right_on(truth, rng.random(N) < 0.75), min_delta=0.5)
    assert result.code == "not-better" and result.reason.endswith("gain below min_delta 0.5")


def test_a_collapsed_challenger_is_never_promoted():
    truth = binary_set()
    rng = np.random.default_rng(8)
    result = gate(truth, outputs_right_on(truth, rng.random(N) < 0.9),
                  outputs_right_on(truth, rng.random(N) < 0.75), collapsed=True,
                  collapse_reason="predicts label 1 for 97.0% of dev examples (limit 95%)")
    assert result.code == "collapsed" and not result.promoted
    assert result.reason == ("not promoted: collapsed (predicts label 1 for 97.0% of dev "
                             "examples (limit 95%))")


def test_first_version_against_the_majority_class_predictor():
    truth = np.array([0] * 300 + [1] * 100)
    majority = constant_outputs(N, MRPC, 0, None)
    useful = outputs_right_on(truth, np.random.default_rng(8).random(N) < 0.85)
    result = gate(truth, useful, majority, metric="f1",
                  incumbent_name="majority-class predictor")
    assert result.incumbent == 0.0  # it never predicts the positive class
    assert result.code == "promoted" and "vs majority-class predictor 0.0000" in result.reason
    # On accuracy a model no better than the majority is not promoted.
    weak = outputs_right_on(truth, np.random.default_rng(8).random(N) < 0.74)
    assert gate(truth, weak, majority, incumbent_name="majority-class predictor").code in (
        "not-better", "not-significant")


def regression_set():
    rng = np.random.default_rng(21)
    truth = rng.uniform(0, 5, N)
    return truth, truth + rng.normal(0, 0.5, N), truth + rng.normal(0, 1.0, N)


def test_mse_is_lower_is_better():
    truth, close, far = regression_set()
    result = gate(truth, close, far, metric="mse", labels=(), positive=None)
    assert result.challenger < result.incumbent
    assert result.delta == pytest.approx(result.incumbent - result.challenger)
    assert result.code == "promoted" and 0 < result.ci_low < result.ci_high
    assert " lower (95% CI +" in result.reason
    assert result.flips is None and result.p_value is None
    reverse = gate(truth, far, close, metric="mse", labels=(), positive=None)
    assert reverse.code == "not-better" and reverse.delta < 0 and reverse.ci_high < 0


def test_first_regressor_against_the_constant_mean_predictor():
    truth, close, _ = regression_set()
    result = gate(truth, close, constant_outputs(N, (), None, 2.4), metric="pearson",
                  labels=(), positive=None, incumbent_name="constant-mean predictor")
    assert result.incumbent == 0.0 and result.code == "promoted"


def test_tags_round_trip_and_markdown_reports_the_decision():
    truth = binary_set()
    rng = np.random.default_rng(8)
    result = gate(truth, outputs_right_on(truth, rng.random(N) < 0.9),
                  outputs_right_on(truth, rng.random(N) < 0.75), text_b=None)
    tags = result.tags()
    assert tags["gate.code"] == "promoted" and tags["gate.metric"] == "accuracy"
    for key in ("challenger", "incumbent", "delta", "ci_low", "ci_high", "p_value"):
        assert float(tags[f"gate.{key}"]) == getattr(result, key)
    assert tags["gate.examples"] == "400" and tags["gate.resamples"] == "1000"
    assert tags["gate.flips_right"] == str(result.flips.right)
    assert all(isinstance(v, str) for v in tags.values())
    assert gate(truth, outputs_right_on(truth, rng.random(N) < 0.9),
                outputs_right_on(truth, rng.random(N) < 0.75), metric="f1"
                ).tags()["gate.p_value"] == "none"
    text = result.markdown("bertflow-mrpc v4: promoted")
    assert text.startswith("# bertflow-mrpc v4: promoted\n")
    assert f"| challenger | {result.challenger:.4f} |" in text
    assert f"| champion v3 | {result.incumbent:.4f} |" in text
    assert f"| 95% interval | {result.ci_low:+.4f} .. {result.ci_high:+.4f} |" in text
    first = result.flips.became_right[0]
    assert (f"| {first.guid} | {first.text_a} |  | {first.truth} | {first.before} | "
            f"{first.after} |") in text and first.after == first.truth != first.before
    assert f"{result.flips.right} became right, {result.flips.wrong} became wrong" in text


def test_outputs_for_other_examples_are_refused():
    truth = binary_set()
    with pytest.raises(ValueError, match="same examples: 400 true, 400 challenger, 399"):
        gate(truth, np.eye(2)[truth], np.eye(2)[truth][:-1])
