"""AdamWeightDecay arithmetic against the published formula, and run_classifier's schedule."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from bert_core.optimizer import AdamWeightDecay, WarmupLinearDecay, create_optimizer, train_steps


def toy_model():
    """Three variable kinds: a kernel (decayed), a bias and LayerNorm weights (not decayed)."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense"),
                              keras.layers.LayerNormalization(name="attention_layer_norm")])
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    return model


def reference_step(w, g, m, v, lr, decay, b1=0.9, b2=0.999, eps=1e-6, wd=0.01):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    update = m / (np.sqrt(v) + eps) + (wd * w if decay else 0.0)
    return w - lr * update, m, v


def test_two_steps_match_the_formula_without_bias_correction():
    """The portable keras.ops step (JAX's); the fused TensorFlow step is checked against it below."""
    model = toy_model()
    names = [v.path for v in model.trainable_weights]
    assert names == ["sequential/dense/kernel", "sequential/dense/bias",
                     "sequential/attention_layer_norm/gamma", "sequential/attention_layer_norm/beta"]
    opt = AdamWeightDecay(learning_rate=0.1)
    opt.fused = False
    rng = np.random.default_rng(1)
    expected = {v.path: (v.numpy().astype(np.float64), 0.0, 0.0) for v in model.trainable_weights}
    for _ in range(2):
        grads = [rng.normal(scale=0.05, size=v.shape).astype("float32")
                 for v in model.trainable_weights]  # global norm < 1: no clipping
        opt.apply(grads, model.trainable_weights)
        for var, g in zip(model.trainable_weights, grads):
            w, m, v = expected[var.path]
            expected[var.path] = reference_step(w, g, m, v, 0.1, decay=var.path.endswith("dense/kernel"))
    for var in model.trainable_weights:
        np.testing.assert_allclose(var.numpy(), expected[var.path][0], atol=1e-7, rtol=0)
    assert [opt.decays(v) for v in model.trainable_weights] == [True, False, False, False]


def test_the_fused_tensorflow_step_equals_the_portable_one():
    """What `bertflow run` trains with on TensorFlow against the keras.ops step (JAX's). The
    kernel computes 1 - b2 in float32 (0.999987e-3 for 0.999) where the portable step takes it
    from Python's double: v differs by 1.3e-5 relative, each step by ~6.4e-6 relative."""
    models, optimizers = [toy_model(), toy_model()], [AdamWeightDecay(learning_rate=0.1),
                                                      AdamWeightDecay(learning_rate=0.1)]
    optimizers[1].fused = False
    rng = np.random.default_rng(2)
    for _ in range(3):
        grads = [rng.normal(scale=0.05, size=v.shape).astype("float32")
                 for v in models[0].trainable_weights]
        for model, opt in zip(models, optimizers):
            opt.apply(grads, model.trainable_weights)
    start = toy_model().trainable_weights
    for fused, portable, before in zip(models[0].trainable_weights, models[1].trainable_weights,
                                       start):
        moved = fused.numpy() - before.numpy()
        assert np.abs(moved).min() > 0.01  # three steps of lr 0.1 moved every weight
        np.testing.assert_allclose(moved, portable.numpy() - before.numpy(), rtol=3e-5, atol=0)
    for a, b in zip(optimizers[0].variables, optimizers[1].variables):  # iterations, m and v
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=3e-5, atol=0)


def test_layer_norm_and_bias_are_not_decayed_by_full_path():
    opt = AdamWeightDecay()
    for path, decays in [("transformer_layer_0/attention_layer_norm/gamma", False),
                         ("embeddings_layer_norm/beta", False), ("pooled_dense/bias", False),
                         ("token_embedding/embeddings", True), ("logits/kernel", True)]:
        var = keras.Variable(np.zeros(2), name=path.rsplit("/", 1)[1])
        var._path = path  # the path a model gives the variable
        assert opt.decays(var) is decays, path


def test_gradients_are_clipped_to_global_norm_one():
    var = keras.Variable(np.zeros(4, "float32"), name="kernel")
    opt = AdamWeightDecay(learning_rate=1.0, weight_decay_rate=0.0, beta_1=0.0, beta_2=0.0,
                          epsilon=0.0)
    # With b1 = b2 = 0 the step is g / |g| elementwise, whatever the scale; so inspect m instead.
    opt.apply([np.array([30.0, 40.0, 0.0, 0.0], "float32")], [var])
    np.testing.assert_allclose(opt._m[0].numpy(), [0.6, 0.8, 0.0, 0.0], atol=1e-6)


def test_mrpc_step_counts():
    assert train_steps(3668, 32, 3.0, 0.1) == (343, 34)


@pytest.mark.parametrize("step,factor", [(0, 0.0), (17, 0.5), (33, 33 / 34),
                                         (34, 1 - 34 / 343), (200, 1 - 200 / 343),
                                         (343, 0.0), (500, 0.0)])
def test_warmup_then_linear_decay_as_in_google_research_bert(step, factor):
    schedule = WarmupLinearDecay(2e-5, 343, 34)
    assert float(schedule(step)) == pytest.approx(2e-5 * factor, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("micro_batches", [1, 4])
def test_optimizer_serialises_with_its_schedule(micro_batches):
    opt = create_optimizer(2e-5, 343, 34, micro_batches)
    clone = AdamWeightDecay.from_config(opt.get_config())
    assert isinstance(clone._learning_rate, WarmupLinearDecay)
    assert clone._learning_rate.get_config() == {"peak_learning_rate": 2e-5,
                                                 "num_train_steps": 343, "num_warmup_steps": 34,
                                                 "micro_batches": micro_batches}
    assert clone.global_clipnorm == 1.0 and clone.weight_decay_rate == 0.01
    assert clone.gradient_accumulation_steps == (micro_batches if micro_batches > 1 else None)


def test_with_micro_batches_the_schedule_counts_updates():
    schedule = WarmupLinearDecay(1.0, 10, 2, micro_batches=4)
    rates = [float(keras.ops.convert_to_numpy(schedule(i))) for i in range(12)]
    assert rates == pytest.approx([0.0] * 4 + [0.5] * 4 + [0.8] * 4)  # updates 0-2 of 10, warmup 2


def test_keras_private_variable_index_still_means_the_build_position():
    """AdamWeightDecay finds a variable's m, v and decay flag through Keras' private
    `Optimizer._get_variable_index`, as Keras' own Adam does; nothing public replaces it."""
    hint = (f"Keras {keras.__version__}: Optimizer._get_variable_index, which "
            "AdamWeightDecay.slot_index (bert_core/optimizer.py) calls, {}. Check how "
            "keras/src/optimizers/adam.py's update_step finds its slots now and use that, then "
            "widen the keras pin in pyproject.toml.")
    assert callable(getattr(keras.optimizers.Optimizer, "_get_variable_index", None)), \
        hint.format("is gone")
    model = toy_model()
    opt = AdamWeightDecay(learning_rate=0.1)
    variables = list(reversed(model.trainable_weights))  # not the model's own order
    opt.build(variables)
    indices = [opt.slot_index(v) for v in variables]
    assert indices == list(range(len(variables))), \
        hint.format(f"no longer gives the position in build()'s list ({indices})")
    assert [tuple(opt._m[i].shape) for i in indices] == [tuple(v.shape) for v in variables]
    assert opt._decay == [False, False, False, True]  # the kernel, last after reversing
