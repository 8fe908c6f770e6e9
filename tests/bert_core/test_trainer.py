"""The training core on whichever Keras backend is loaded (tests/bert_core/test_jax_backend.py runs
this file again on JAX): precision, accumulation, evaluation during training, early stopping,
regression (STS-B's scores) and class weights (CoLA's imbalance)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from scipy.special import logsumexp

from bert_core.config import BertConfig
from bert_core.features import Features, pack_ids, pad_batch
from bert_core.inputs import Split, TrainBatches, balanced_weights
from bert_core.model import BertBackbone, BertClassifier
from bert_core.train_config import TrainConfig
from bert_core.trainer import fine_tune, read_history
from tests.bert_core.test_training import generated_pairs

TESTS = Path(__file__).parents[1]


def pairs_split(n: int, seed: int = 0) -> Split:
    x, y = generated_pairs(n, seed=seed)
    return Split(Features(x["input_ids"], x["input_mask"], x["segment_ids"]), y,
                 [f"{seed}-{i}" for i in range(n)])


def scored_split(n: int, seed: int = 0) -> Split:
    """STS-B-like scores: 1.25 per token of sentence b (of 4) from the vocab's upper half, so
    0, 1.25, ..., 5; sentence a is noise."""
    rng = np.random.default_rng(seed)
    packed, scores = [], []
    for _ in range(n):
        upper = rng.permutation(np.arange(4) < rng.integers(0, 5))
        b = np.where(upper, rng.integers(32, 64, 4), rng.integers(4, 32, 4)).tolist()
        packed.append(pack_ids(rng.integers(4, 64, 5).tolist(), b, 16, cls_id=2, sep_id=3))
        scores.append(1.25 * upper.sum())
    return Split(pad_batch(packed, 16), np.array(scores, np.float32),
                 [f"{seed}-{i}" for i in range(n)])


def build(dropout: float = 0.1, initializer_range: float = 0.02, num_labels: int = 2):
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        initializer_range=initializer_range)
    return lambda: BertClassifier(BertBackbone(config, dropout_length=16), num_labels=num_labels,
                                  dropout=dropout)


def train(tmp_path, cfg: TrainConfig, n: int = 512, dropout: float = 0.1, dev: Split | None = None):
    lines: list[str] = []
    trained = fine_tune(build(dropout), pairs_split(n), cfg, tmp_path, lines.append,
                        dev=dev)
    history = read_history(tmp_path / "history.jsonl", cfg.batch_size, trained.seconds)
    return trained, history, lines


QUICK = TrainConfig(learning_rate=1e-3, epochs=6, batch_size=32, save_min_seconds=0, seed=1)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_each_precision_trains_a_tiny_model_whose_loss_falls(tmp_path, precision):
    trained, history, lines = train(tmp_path, QUICK.model_copy(update={"precision": precision}))
    assert trained.steps == 96 and history["steps"] == list(range(1, 97))
    epochs = [e["loss"] for e in history["epochs"]]  # each epoch's mean
    assert epochs[-1] < 0.5 * epochs[0], epochs
    compute = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}
    layer = trained.model.backbone.get_layer("transformer_layer_0")
    assert layer.compute_dtype == compute[precision] and layer.variable_dtype == "float32"
    assert trained.model.get_layer("logits").compute_dtype == "float32"  # the loss in float32
    assert keras.config.dtype_policy().name == "float32"  # no global policy left behind
    if precision != "float32":
        assert precision in lines[0]


def test_accumulated_micro_batches_train_the_model_one_batch_trains(tmp_path):
    """4 micro-batches of 8 and one batch of 32, padded alike, dropout off: the same updates
    (mean gradient, clipped after averaging), the same schedule, the same step count."""
    cfg = QUICK.model_copy(update={"epochs": 1, "padding": "max_length"})
    whole, whole_history, _ = train(tmp_path / "a", cfg, dropout=0.0)
    micro, micro_history, lines = train(tmp_path / "b", cfg.model_copy(
        update={"accumulate_steps": 4}), dropout=0.0)
    assert micro.steps == whole.steps == 16 and micro_history["steps"] == list(range(1, 17))
    assert micro_history["learning_rate"] == pytest.approx(whole_history["learning_rate"])
    for a, b in zip(whole.model.get_weights(), micro.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)
    assert "4 micro-batches each" in lines[0]


def test_dev_is_evaluated_every_n_steps_and_early_stopping_stops(tmp_path):
    cfg = QUICK.model_copy(update={"eval_every_steps": 4, "early_stopping_patience": 2,
                                   "early_stopping_min_delta": 10.0})  # nothing ever improves
    trained, history, lines = train(tmp_path, cfg, dev=pairs_split(40, seed=9))
    assert [e["step"] for e in history["evaluations"]] == [4, 8, 12]  # first, then 2 patient
    assert trained.steps == 12 and history["epochs"] == []
    assert all(0 <= e["accuracy"] <= 1 and e["loss"] > 0 for e in history["evaluations"])
    assert sum(bool(re.match(r"step \d+: dev loss", line)) for line in lines) == 3


@pytest.mark.parametrize("metric", ["loss", "accuracy"])
def test_restore_best_ends_with_the_best_evaluations_weights(tmp_path, metric):
    dev = pairs_split(40, seed=9)
    cfg = QUICK.model_copy(update={"learning_rate": 3e-3, "eval_every_steps": 4,
                                   "restore_best": True, "early_stopping_metric": metric})
    trained, history, _ = train(tmp_path, cfg, dev=dev)
    assert trained.steps == 96  # no patience: it never stops early
    values = [e[metric] for e in history["evaluations"]]
    best = min(values) if metric == "loss" else max(values)
    trained.model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=["accuracy"])
    final = trained.model.evaluate(dev.features.as_dict(), dev.labels, verbose=0,
                                   return_dict=True)[metric]
    assert final == pytest.approx(best, abs=1e-4)


def test_warmup_proportion_sets_the_rising_part_of_the_schedule(tmp_path):
    _, history, _ = train(tmp_path, QUICK.model_copy(update={"epochs": 1,
                                                             "warmup_proportion": 0.5}))
    rates = history["learning_rate"]  # 16 steps: 8 rising from 0, then the decay from step 0's
    assert rates[0] == 0 and all(a < b for a, b in zip(rates[:7], rates[1:8]))
    assert rates[8] == pytest.approx(0.5 * QUICK.learning_rate)  # google-research/bert's
    assert all(a > b for a, b in zip(rates[8:], rates[9:]))


def test_the_shuffle_buffer_changes_the_batches_and_a_seed_repeats_them(tmp_path):
    cfg = QUICK.model_copy(update={"epochs": 1, "shuffle_buffer": 1})
    first, second = (train(tmp_path / name, cfg)[1]["loss"] for name in ("a", "b"))
    shuffled = train(tmp_path / "c", cfg.model_copy(update={"shuffle_buffer": 100}))[1]["loss"]
    assert first == second and first != shuffled


def test_an_xla_compiled_step_trains_the_same_model(tmp_path):
    """jit_compile (TensorFlow; JAX compiles anyway): dropout off, the same weights."""
    cfg = QUICK.model_copy(update={"epochs": 0.5, "padding": "max_length"})
    eager, _, _ = train(tmp_path / "a", cfg, dropout=0.0)
    compiled, _, _ = train(tmp_path / "b", cfg.model_copy(update={"jit_compile": True}),
                           dropout=0.0)
    for a, b in zip(eager.model.get_weights(), compiled.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_settings_that_need_each_other_are_refused():
    with pytest.raises(ValueError, match="not a multiple of accumulate_steps"):
        TrainConfig(batch_size=32, accumulate_steps=3)
    with pytest.raises(ValueError, match="restore_best needs eval_every_steps"):
        TrainConfig(restore_best=True)


def test_every_train_option_is_exercised_by_a_test():
    """A new TrainConfig field needs a test that sets it (as `name=`, `"name":` or `name:`)."""
    sources = "\n".join(p.read_text() for p in TESTS.rglob("*.py"))
    untested = [name for name in TrainConfig.model_fields
                if not re.search(rf"\b{name}\b\s*[=:\"']", sources)]
    assert not untested, untested


def test_a_history_file_keeps_the_last_value_of_a_step_logged_twice(tmp_path):
    log = tmp_path / "history.jsonl"
    records = [{"step": 1, "loss": 0.9, "learning_rate": 0.1}, {"resumed_from_step": 0},
               {"step": 1, "loss": 0.8, "learning_rate": 0.1},
               {"epoch": 1, "step": 1, "loss": 0.8, "val_loss": 0.7, "val_accuracy": 0.5}]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    history = read_history(log, 4, 1.0)
    assert history["loss"] == [0.8] and history["resumed_from_step"] == 0
    assert history["evaluations"] == [{"step": 1, "loss": 0.7, "accuracy": 0.5}]


def _mse(model, split: Split) -> float:
    predicted = model.predict(split.features.as_dict(), batch_size=64, verbose=0)
    assert predicted.shape == (len(split.labels), 1)  # one score per pair
    return float(np.mean((predicted[:, 0].astype(np.float64) - split.labels) ** 2))


def test_a_regression_head_learns_the_scores_and_dev_is_scored_by_its_mse(tmp_path):
    """A 1-unit head on mean squared error ends far below what predicting the mean score
    scores; each dev evaluation is the dev MSE (no accuracy)."""
    train_split, dev = scored_split(512), scored_split(64, seed=9)
    cfg = QUICK.model_copy(update={"epochs": 12, "eval_every_steps": 32})
    lines: list[str] = []
    trained = fine_tune(build(num_labels=1), train_split, cfg, tmp_path, lines.append, dev=dev)
    history = read_history(tmp_path / "history.jsonl", cfg.batch_size, trained.seconds)
    assert trained.steps == 192 and "regression" in lines[0]
    assert _mse(trained.model, train_split) < 0.1 * np.var(train_split.labels)  # var: 3.2
    evaluations = history["evaluations"]
    assert [e["step"] for e in evaluations] == [32, 64, 96, 128, 160, 192]
    assert all(set(e) == {"step", "loss"} for e in evaluations)
    assert evaluations[-1]["loss"] == pytest.approx(_mse(trained.model, dev), rel=1e-4)
    assert evaluations[-1]["loss"] < 0.1 * evaluations[0]["loss"]
    assert any(re.fullmatch(r"step 192: dev loss [\d.]+", line) for line in lines)


def test_early_stopping_watches_a_regressions_dev_mse(tmp_path):
    cfg = QUICK.model_copy(update={"eval_every_steps": 4, "early_stopping_patience": 1,
                                   "early_stopping_min_delta": 10.0})  # nothing ever improves
    trained = fine_tune(build(num_labels=1), scored_split(128), cfg, tmp_path, print,
                        dev=scored_split(32, seed=9))
    history = read_history(tmp_path / "history.jsonl", cfg.batch_size, trained.seconds)
    assert trained.steps == 8 and [e["step"] for e in history["evaluations"]] == [4, 8]


def test_settings_that_need_class_labels_are_refused_for_scores(tmp_path):
    scores, classes = scored_split(64), pairs_split(64)
    cases = [(QUICK.model_copy(update={"class_weight": "balanced"}), scores, 1, "class_weight"),
             (QUICK.model_copy(update={"eval_every_steps": 2, "early_stopping_metric": "accuracy"}),
              scores, 1, "early_stopping_metric='accuracy' needs class labels"),
             (QUICK, scores, 2, "regression labels need a 1-unit head; the model outputs 2"),
             (QUICK, classes, 1, "class labels need a head of one logit per class")]
    for cfg, split, units, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            fine_tune(build(num_labels=units), split, cfg, tmp_path, print, dev=split)


def _imbalanced(n_minority: int = 48) -> Split:
    """CoLA-like: every class-0 pair of 400 generated ones (~200) and `n_minority` of class 1."""
    split = pairs_split(400)
    rows = np.concatenate([np.flatnonzero(split.labels == 0),
                           np.flatnonzero(split.labels == 1)[:n_minority]])
    features = Features(*(v[rows] for v in split.features.as_dict().values()))
    return Split(features, split.labels[rows], [split.guids[i] for i in rows])


@pytest.mark.parametrize("class_weight", ["none", "balanced"])
def test_class_weights_weight_each_examples_loss_in_the_first_step(tmp_path, class_weight):
    """The first step's loss, on the model as built, is the batch's cross-entropy weighted by
    n / (classes * count) per class (sklearn's "balanced") and averaged over the batch (as
    Keras' class_weight), or the plain mean with "none"."""
    split = _imbalanced()
    cfg = QUICK.model_copy(update={"epochs": 0.3, "padding": "max_length",
                                   "class_weight": class_weight})
    built = []

    def keep_initial():
        model = build(dropout=0.0)()
        built.append(model.get_weights())
        return model

    trained = fine_tune(keep_initial, split, cfg, tmp_path, print)
    history = read_history(tmp_path / "history.jsonl", cfg.batch_size, trained.seconds)
    weights = balanced_weights(split.labels)
    assert weights.max() > 2 * weights.min()  # the minority weighs more
    first = TrainBatches(split, trained.steps, cfg.batch_size, cfg.seed, cfg.shuffle_buffer,
                         padding="max_length")
    [(features, labels)], rows = first.batch(0), first.plan[0][0]
    initial = build(dropout=0.0)()
    initial.set_weights(built[0])
    logits = np.asarray(initial.predict_on_batch(features), np.float64)
    losses = logsumexp(logits, axis=1) - logits[np.arange(len(labels)), labels]
    weighted = float(np.mean(losses * weights[rows]))
    assert abs(weighted - losses.mean()) > 1e-3  # the two choices give other losses
    expected = weighted if class_weight == "balanced" else float(losses.mean())
    assert history["loss"][0] == pytest.approx(expected, rel=1e-4)
