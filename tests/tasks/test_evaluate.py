"""The evaluate stage: metrics checked by hand, the collapse verdict, GLUE's file formats byte for
byte, real PNGs, and a whole report from a tiny random model on real shards."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from tasks.config import DataConfig, EvalConfig, ModelConfig, RowBounds
from tasks.download import download_data
from tasks.evaluate import (collapse_check, confusion, dev_metrics, evaluate_model,
                            plot_confusion, plot_loss, plot_pr, plot_roc, summary_markdown,
                            write_dev_predictions, write_glue_submission, write_test_results)
from tasks.fingerprint import sha256_file
from tasks.fingerprint import SEAL
from tasks.records import TrainedModel
from tasks.tokenize import tokenize_splits
from tests.fixtures import tiny_vocab, write_msr_files, write_release_zip

# Ten dev examples: 6 positives, 4 negatives. At 0.5: TP 4, FN 2, FP 1, TN 3.
LABELS = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
P_POSITIVE = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.55, 0.2, 0.1, 0.35])
PROBS = np.stack([1 - P_POSITIVE, P_POSITIVE], axis=1)
HISTORY = {"steps": [1, 2, 3, 4], "loss": [0.71, 0.69, 0.66, 0.62],
           "learning_rate": [1e-5, 2e-5, 1e-5, 0.0],
           "epochs": [{"epoch": 1, "step": 2, "loss": 0.70, "accuracy": 0.5},
                      {"epoch": 2, "step": 4, "loss": 0.64, "accuracy": 0.6}],
           "resumed_from_step": None, "examples_per_second": 55.0}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_metrics_on_a_hand_checked_example():
    m = dev_metrics(LABELS, PROBS)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["recall"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))  # 2TP / (2TP + FP + FN)
    assert m["majority_baseline"] == pytest.approx(6 / 10)
    assert m["positive_share"] == pytest.approx(5 / 10)
    assert m["examples"] == 10
    # 21 of the 24 (positive, negative) pairs rank the positive higher.
    assert m["roc_auc"] == pytest.approx(21 / 24)
    p_true = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.45, 0.8, 0.9, 0.65]
    assert m["loss"] == pytest.approx(-np.mean(np.log(p_true)))
    assert confusion(LABELS, PROBS.argmax(axis=1)) == [[3, 1], [2, 4]]  # [[tn, fp], [fn, tp]]


def test_confusion_with_three_labels():
    assert confusion([0, 1, 2, 2], [0, 2, 2, 1], num_labels=3) == [[1, 0, 0], [0, 0, 1],
                                                                   [0, 1, 1]]


def test_a_model_that_beats_the_baseline_is_not_collapsed():
    assert collapse_check(dev_metrics(LABELS, PROBS), PROBS.argmax(axis=1), 0.95) is None


def test_a_constant_predictor_is_collapsed():
    probs = np.tile([0.3, 0.7], (10, 1))
    reason = collapse_check(dev_metrics(LABELS, probs), probs.argmax(axis=1), 0.95)
    assert "predicts label 1 for 100.0% of dev examples" in reason
    assert "does not beat the majority baseline 0.6000" in reason


def test_mrpc_dev_at_exactly_the_baseline_is_collapsed():
    # MRPC dev: 279 of 408 pairs are paraphrases; always saying "paraphrase" scores 0.6838, as
    # google-research/bert's run from scratch did.
    labels = np.array([1] * 279 + [0] * 129)
    probs = np.tile([0.2, 0.8], (408, 1))
    m = dev_metrics(labels, probs)
    assert round(m["majority_baseline"], 4) == 0.6838 and m["accuracy"] == m["majority_baseline"]
    assert "accuracy 0.6838 does not beat the majority baseline 0.6838" in collapse_check(
        m, probs.argmax(axis=1), 0.95)


def test_mixed_predictions_at_the_baseline_are_collapsed():
    predictions = np.array([1, 1, 1, 1, 0, 0, 1, 1, 0, 0])  # 6 of 10 right, 60% positive
    probs = np.eye(2)[predictions]
    reason = collapse_check(dev_metrics(LABELS, probs), predictions, 0.95)
    assert reason == "accuracy 0.6000 does not beat the majority baseline 0.6000"


def test_one_class_dev_does_not_crash(tmp_path):
    labels = np.ones(4, int)
    probs = np.array([[0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.1, 0.9]])
    m = dev_metrics(labels, probs)
    assert math.isnan(m["roc_auc"])  # undefined with no negative example
    assert m["accuracy"] == 0.75 and m["majority_baseline"] == 1.0 and m["recall"] == 0.75
    assert collapse_check(m, probs.argmax(axis=1), 0.95) is not None
    plot_roc(labels, probs, tmp_path / "roc.png")
    plot_pr(labels, probs, tmp_path / "pr.png")
    assert (tmp_path / "roc.png").read_bytes()[:8] == PNG_MAGIC


def test_test_results_and_glue_submission_byte_exact(tmp_path):
    probs = np.array([[0.25, 0.75], [0.5, 0.5], [0.875, 0.125]])
    write_test_results(probs, tmp_path / "test_results.tsv")
    write_glue_submission(probs, ("0", "1"), tmp_path / "MRPC.tsv")
    assert (tmp_path / "test_results.tsv").read_bytes() == b"0.25\t0.75\n0.5\t0.5\n0.875\t0.125\n"
    assert (tmp_path / "MRPC.tsv").read_bytes() == b"index\tprediction\n0\t1\n1\t0\n2\t0\n"


def test_test_results_write_float32_as_run_classifier_did(tmp_path):
    write_test_results(np.array([[0.1, 0.9]]), tmp_path / "t.tsv")
    assert (tmp_path / "t.tsv").read_text() == "0.1\t0.9\n"  # not 0.10000000149011612


def test_dev_predictions(tmp_path):
    write_dev_predictions(["dev-1", "dev-2"], np.array([1, 0]), PROBS[6:8].copy(),
                          tmp_path / "dev.tsv")
    assert (tmp_path / "dev.tsv").read_text().splitlines() == [
        "guid\tlabel\tp_positive\tprediction", "dev-1\t1\t0.550000\t1", "dev-2\t0\t0.200000\t0"]


def _assert_real_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    assert path.stat().st_size > 5_000, path
    pixels = imread(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200 and pixels.std() > 0.05, path


def test_plots_are_real_pngs(tmp_path):
    plot_confusion([[3, 1], [2, 4]], ("0", "1"), tmp_path / "confusion_matrix.png")
    plot_roc(LABELS, PROBS, tmp_path / "roc_curve.png")
    plot_pr(LABELS, PROBS, tmp_path / "pr_curve.png")
    plot_loss(HISTORY, tmp_path / "loss_curve.png")
    for path in tmp_path.iterdir():
        _assert_real_png(path)


def test_summary_markdown():
    m = dev_metrics(LABELS, PROBS)
    text = summary_markdown(m, [[3, 1], [2, 4]], None, HISTORY, ("0", "1"))
    assert "| accuracy | 0.7000 | 0.6000 |" in text and "| f1 | 0.7273 |  |" in text
    assert "| 0 | 3 | 1 |" in text and "| 1 | 2 | 4 |" in text
    assert "4 steps in 2 epochs, 55.0 examples/s." in text and "Warning" not in text
    warned = summary_markdown(m, [[3, 1], [2, 4]], "predicts label 1 for 99.0% of dev examples",
                              HISTORY)
    assert "**Warning: collapsed model:** predicts label 1 for 99.0% of dev examples." in warned


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Real shards from the project's tokenize code, and a tiny random classifier saved beside a
    history.json as the train stage leaves them."""
    import keras

    from bert_core.config import BertConfig
    from bert_core.model import BertBackbone, BertClassifier

    root = tmp_path_factory.mktemp("evaluate")
    data = DataConfig(mrpc_source=str(write_msr_files(root / "msr", train_rows=40, dev_every=3)),
                      checkpoint=str(write_release_zip(root / "tiny.zip")), shard_size=4,
                      row_bounds=RowBounds(train=(1, 100), dev=(1, 100), test=(1, 100)))
    raw = download_data(data, root / "home")
    shards = tokenize_splits(raw, data, ModelConfig(max_seq_length=32), root / "home")
    keras.utils.set_random_seed(0)
    model = BertClassifier(BertBackbone(BertConfig(
        vocab_size=len(tiny_vocab()), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64)))
    model_dir = root / "model"
    model_dir.mkdir()
    model.save(model_dir / "model.keras")
    (model_dir / "history.json").write_text(json.dumps(HISTORY))
    trained = TrainedModel(model_dir=str(model_dir),
                           model_sha256=sha256_file(model_dir / "model.keras"), steps=4,
                           seconds=1.0, init="scratch", max_seq_length=32, do_lower_case=True,
                           labels=("0", "1"))
    return trained, shards


REPORT_FILES = {"metrics.json", "dev_predictions.tsv", "test_results.tsv", "MRPC.tsv",
                "confusion_matrix.png", "roc_curve.png", "pr_curve.png", "loss_curve.png",
                "summary.md"}


def test_evaluate_model_writes_the_whole_report_once(inputs, tmp_path):
    trained, shards = inputs
    out = tmp_path / "reports" / "abc"
    report = evaluate_model(trained, shards, EvalConfig(batch_size=4), out)

    assert report.report_dir == str(out)
    assert {p.name for p in out.iterdir()} == REPORT_FILES | {SEAL}  # sealed: whole
    assert [p.name for p in out.parent.iterdir()] == ["abc"]  # no temp folder left beside it
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == {"metrics": report.metrics, "confusion_matrix": report.confusion_matrix,
                     "collapsed": report.collapsed, "collapse_reason": report.collapse_reason}
    assert report.collapsed == (report.collapse_reason is not None)
    dev_rows = (out / "dev_predictions.tsv").read_text().splitlines()[1:]
    assert [r.split("\t")[0] for r in dev_rows] == [f"dev-{i}" for i in range(1, 14)]  # in order
    assert report.metrics["examples"] == shards.rows["dev"] == 13
    assert sum(map(sum, report.confusion_matrix)) == 13
    test_lines = (out / "test_results.tsv").read_text().splitlines()
    assert len(test_lines) == shards.rows["test"] == 8
    assert all(sum(map(float, line.split("\t"))) == pytest.approx(1, abs=1e-6)
               for line in test_lines)
    glue = (out / "MRPC.tsv").read_text().splitlines()
    assert glue[0] == "index\tprediction" and len(glue) == 1 + shards.rows["test"]
    for name in ("confusion_matrix.png", "roc_curve.png", "pr_curve.png", "loss_curve.png"):
        _assert_real_png(out / name)

    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = evaluate_model(trained, shards, EvalConfig(batch_size=4), out)
    assert again == report
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # nothing rewritten


def test_predictions_do_not_depend_on_batch_size(inputs, tmp_path):
    trained, shards = inputs
    a = evaluate_model(trained, shards, EvalConfig(batch_size=3), tmp_path / "a")
    b = evaluate_model(trained, shards, EvalConfig(batch_size=64), tmp_path / "b")
    assert a.confusion_matrix == b.confusion_matrix
    assert a.metrics["loss"] == pytest.approx(b.metrics["loss"], rel=1e-5)


EVALUATE_ALONE = """
import sys
from pathlib import Path
from tasks.config import EvalConfig
from tasks.evaluate import evaluate_model
from tasks.records import TrainedModel
from tasks.tokenize import Shards
trained, shards = TrainedModel.model_validate_json(sys.argv[1]), Shards.model_validate_json(sys.argv[2])
report = evaluate_model(trained, shards, EvalConfig(batch_size=4), Path(sys.argv[3]))
print(int(report.metrics["examples"]), "bert_core.optimizer" in sys.modules)
"""


def test_a_trained_model_evaluates_in_a_process_that_never_trained(inputs, tmp_path):
    """As in a rerun whose train task is cached (or a second run that found the first one's
    model): the file carries the compiled AdamWeightDecay, and nothing in the process has
    imported the module that registers it."""
    import keras

    from bert_core.optimizer import create_optimizer

    trained, shards = inputs
    model = keras.saving.load_model(trained.keras_file)
    model.compile(optimizer=create_optimizer(2e-5, 10, 1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model_dir = tmp_path / "model"
    shutil.copytree(trained.model_dir, model_dir)
    model.save(model_dir / "model.keras")
    compiled = trained.model_copy(update={"model_dir": str(model_dir)})

    done = subprocess.run([sys.executable, "-c", EVALUATE_ALONE, compiled.model_dump_json(),
                           shards.model_dump_json(), str(tmp_path / "report")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [str(shards.rows["dev"]), "False"]


def test_dynamic_padding_predicts_what_padding_to_max_length_predicts(inputs):
    """Each length-sorted batch cut to its own longest pair gives the probabilities of the plain
    padded-to-32 prediction, row for row in manifest order; and it really cut the batches."""
    import keras

    from bert_core.inputs import read_split
    from bert_core.model import softmax
    from bert_core.predict import length_batches, predict_padded
    from tasks.evaluate import predict_split

    trained, shards = inputs
    model = keras.saving.load_model(trained.keras_file, compile=False)
    for split in ("dev", "test"):
        data = read_split(shards.shard_dir, split)
        features, labels, guids = data.features, data.labels, data.guids
        probs, same_labels, same_guids = predict_split(model, shards, split, batch_size=4)
        padded = softmax(predict_padded(model, features, batch_size=4))
        np.testing.assert_allclose(probs, padded, rtol=0, atol=1e-5)
        assert same_guids == guids and (same_labels is None) == (labels is None)
        widths = [w for _, w in length_batches(features.input_mask.sum(axis=1), 4, 32)]
        assert features.input_ids.shape[1] == 32 and min(widths) < 32, widths


def test_a_large_split_logs_its_progress(inputs):
    """13 dev pairs in batches of 1: more than 10 batches, so a line after 10 and at the end."""
    import keras

    from tasks.evaluate import predict_split

    trained, shards = inputs
    model = keras.saving.load_model(trained.keras_file, compile=False)
    lines = []
    predict_split(model, shards, "dev", batch_size=1, log=lines.append)
    assert [line.split(",")[0] for line in lines] == ["dev 10/13 (77%)", "dev 13/13 (100%)"]
    assert all(" pairs/s, ETA " in line for line in lines), lines
    quiet = []
    predict_split(model, shards, "dev", batch_size=4, log=quiet.append)  # 4 batches: no lines
    assert quiet == []
