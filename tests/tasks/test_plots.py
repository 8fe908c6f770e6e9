"""The evaluate stage's figures are real PNGs that show what they say: MRPC's four, an N x N
confusion matrix that grows with N, the regression scatter, and a one-class dev."""

from __future__ import annotations

import numpy as np
from matplotlib.image import imread

from tasks.plots import confusion_size, plot_confusion, plot_loss, plot_pr, plot_roc, plot_scatter
from tests.tasks.eval_fixtures import HISTORY, LABELS, P_POSITIVE, PNG_MAGIC, assert_real_png


def test_mrpc_plots_are_real_pngs(tmp_path):
    plot_confusion([[3, 1], [2, 4]], ("0", "1"), tmp_path / "confusion_matrix.png")
    plot_roc(LABELS == 1, P_POSITIVE, tmp_path / "roc_curve.png")
    plot_pr(LABELS == 1, P_POSITIVE, tmp_path / "pr_curve.png")
    plot_loss(HISTORY, tmp_path / "loss_curve.png")
    for path in tmp_path.iterdir():
        assert_real_png(path)
    assert imread(tmp_path / "confusion_matrix.png").shape[:2] == (360, 400)  # as MRPC's was


def test_an_n_by_n_confusion_matrix_grows_with_n(tmp_path):
    names = tuple(f"class_{i}" for i in range(12))
    matrix = (np.eye(12, dtype=int) * 20 + 1).tolist()
    plot_confusion(matrix, names, tmp_path / "twelve.png")
    plot_confusion([[5, 1, 0], [2, 6, 1], [0, 1, 7]], ("contradiction", "entailment", "neutral"),
                   tmp_path / "three.png")
    twelve = assert_real_png(tmp_path / "twelve.png")
    three = assert_real_png(tmp_path / "three.png")
    width, height = confusion_size(12)
    assert twelve.shape[:2] == (round(height * 100), round(width * 100))
    assert twelve.shape[1] > three.shape[1] * 1.5


def test_labels_differ_in_the_confusion_matrix(tmp_path):
    """The label names are drawn: the same counts under other names give other pixels."""
    plot_confusion([[3, 1], [2, 4]], ("entailment", "not_entailment"), tmp_path / "a.png")
    plot_confusion([[3, 1], [2, 4]], ("0", "1"), tmp_path / "b.png")
    a, b = imread(tmp_path / "a.png"), imread(tmp_path / "b.png")
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_the_regression_scatter(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 5, 300)
    plot_scatter(truth, truth + rng.normal(0, 0.5, 300), tmp_path / "scatter.png")
    plot_scatter(truth, np.full(300, 2.5), tmp_path / "constant.png")  # r undefined: no crash
    good = assert_real_png(tmp_path / "scatter.png")
    assert good.shape[:2] == (400, 400)
    assert not np.array_equal(good, imread(tmp_path / "constant.png"))


def test_one_class_dev_plots_say_so(tmp_path):
    is_positive = np.ones(4, bool)
    scores = np.array([0.8, 0.6, 0.3, 0.9])
    plot_roc(is_positive, scores, tmp_path / "roc.png")
    plot_pr(is_positive, scores, tmp_path / "pr.png")
    assert (tmp_path / "roc.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "pr.png").read_bytes()[:8] == PNG_MAGIC
