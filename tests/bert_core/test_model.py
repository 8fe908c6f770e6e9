"""The Keras BERT: parameter count, names, masking, and .keras round trips."""

from __future__ import annotations

import keras
import numpy as np

from bert_core.config import BertConfig
from bert_core.model import BertBackbone, BertClassifier


def features(batch=2, seq=12, vocab=64, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int32)
    mask[0, seq // 2:] = 0
    return {"input_ids": rng.integers(1, vocab, (batch, seq)).astype(np.int32) * mask,
            "input_mask": mask,
            "segment_ids": (np.arange(seq)[None, :] >= seq // 3).astype(np.int32) * mask}


def test_bert_tiny_classifier_has_the_published_parameter_count():
    model = BertClassifier.from_bert_config(BertConfig.tiny(), num_labels=2)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 4_386_178


def test_layers_are_named_as_documented(micro_config):
    backbone = BertBackbone(micro_config)
    names = {layer.name for layer in backbone.layers}
    assert {"token_embedding", "segment_embedding", "position_embedding", "embeddings_layer_norm",
            "transformer_layer_0", "transformer_layer_1", "pooled_dense"} <= names


def test_outputs_have_bert_shapes(micro_config):
    outputs = BertBackbone(micro_config)(features())
    assert tuple(outputs["sequence_output"].shape) == (2, 12, 32)
    assert tuple(outputs["pooled_output"].shape) == (2, 32)
    logits = BertClassifier(BertBackbone(micro_config), num_labels=3)(features())
    assert tuple(logits.shape) == (2, 3)


def test_padding_tokens_do_not_change_real_positions(micro_config):
    backbone = BertBackbone(micro_config)
    x = features()
    other = {k: v.copy() for k, v in x.items()}
    other["input_ids"][0, 6:] = 7  # different ids under the mask
    other["segment_ids"][0, 6:] = 1
    a = keras.ops.convert_to_numpy(backbone(x)["sequence_output"])[0, :6]
    b = keras.ops.convert_to_numpy(backbone(other)["sequence_output"])[0, :6]
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_dropout_is_active_only_in_training(micro_config):
    model = BertClassifier(BertBackbone(micro_config))
    x = features()
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
    assert not np.allclose(model(x, training=True), model(x, training=False))


def test_keras_file_round_trip(tmp_path, micro_config):
    model = BertClassifier(BertBackbone(micro_config, name="bert"), num_labels=2)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, BertClassifier) and isinstance(loaded.backbone, BertBackbone)
    assert loaded.backbone.bert_config == micro_config
    np.testing.assert_array_equal(loaded(features()), model(features()))
