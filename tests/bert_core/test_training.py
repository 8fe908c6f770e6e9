"""A tiny random-init classifier learns a generated sentence-pair task with our optimizer."""

from __future__ import annotations

import keras
import numpy as np

from bert_core.features import pack_ids, pad_batch
from bert_core.model import BertBackbone, BertClassifier
from bert_core.optimizer import create_optimizer, train_steps


def generated_pairs(n, vocab=64, seq=16, seed=0):
    """Label 1 when sentence b is drawn from the upper half of the vocab; a is noise."""
    rng = np.random.default_rng(seed)
    half = vocab // 2
    packed, labels = [], []
    for _ in range(n):
        label = int(rng.integers(0, 2))
        a = rng.integers(4, vocab, 5).tolist()
        b = rng.integers(half if label else 4, vocab if label else half, 4).tolist()
        packed.append(pack_ids(a, b, seq, cls_id=2, sep_id=3))
        labels.append(label)
    return pad_batch(packed, seq).as_dict(), np.array(labels, np.int32)


def test_loss_falls(micro_config):
    keras.utils.set_random_seed(0)
    x, y = generated_pairs(512)
    model = BertClassifier(BertBackbone(micro_config), num_labels=2)
    steps, warmup = train_steps(len(y), 32, 6)
    model.compile(optimizer=create_optimizer(1e-3, steps, warmup),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=32, epochs=6, shuffle=True, verbose=0)
    losses = history.history["loss"]
    assert model.optimizer.iterations.numpy() == steps == 96
    assert losses[-1] < 0.5 * losses[0], losses
