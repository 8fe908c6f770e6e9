"""The Keras BERT: parameter count, names, masking, .keras round trips, BertModel's getters."""

from __future__ import annotations

import keras
import numpy as np
import pytest

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


# google-research/bert's BertModel getters, called on inputs (a Keras model has no fixed inputs).

def numpy_of(x):
    return keras.ops.convert_to_numpy(x)


def test_getters_agree_with_the_forward_pass(micro_config):
    backbone = BertBackbone(micro_config)
    x = features()
    out = backbone(x)
    seq = backbone.get_sequence_output(x["input_ids"], x["input_mask"], x["segment_ids"])
    np.testing.assert_allclose(numpy_of(seq), numpy_of(out["sequence_output"]), atol=1e-6)
    layers = backbone.get_all_encoder_layers(x)
    assert len(layers) == micro_config.num_hidden_layers
    np.testing.assert_array_equal(numpy_of(layers[-1]), numpy_of(seq))
    pooled = backbone.get_pooled_output(x)
    np.testing.assert_allclose(numpy_of(pooled), numpy_of(out["pooled_output"]), atol=1e-6)
    # The [CLS] row of the sequence output through the pooler is the pooled output.
    cls_row = keras.ops.convert_to_tensor(numpy_of(seq)[:, 0, :])
    through_pooler = backbone.get_layer("pooled_dense")(cls_row)
    np.testing.assert_allclose(numpy_of(through_pooler), numpy_of(pooled), atol=1e-6)


def test_embedding_output_is_the_layer_normed_sum_of_three_lookups(micro_config):
    backbone = BertBackbone(micro_config)
    x = features()
    table = numpy_of(backbone.get_embedding_table())
    segments = numpy_of(backbone.get_layer("segment_embedding").embeddings)
    positions = numpy_of(backbone.get_layer("position_embedding").embeddings)
    norm = backbone.get_layer("embeddings_layer_norm")
    summed = table[x["input_ids"]] + segments[x["segment_ids"]] + positions[None, :12]
    mean, var = summed.mean(-1, keepdims=True), summed.var(-1, keepdims=True)
    expected = (summed - mean) / np.sqrt(var + micro_config.layer_norm_eps)
    expected = expected * numpy_of(norm.gamma) + numpy_of(norm.beta)
    embedded = backbone.get_embedding_output(x)
    np.testing.assert_allclose(numpy_of(embedded), expected, atol=1e-5)
    # ... and the first encoder layer takes it from there.
    first = backbone.get_layer("transformer_layer_0")(embedded, keras.ops.convert_to_tensor(
        x["input_mask"]))
    np.testing.assert_allclose(numpy_of(first), numpy_of(backbone.get_all_encoder_layers(x)[0]),
                               atol=1e-6)


def test_embedding_table_is_the_token_embedding_weight(micro_config):
    backbone = BertBackbone(micro_config)
    table = backbone.get_embedding_table()
    assert tuple(table.shape) == (micro_config.vocab_size, micro_config.hidden_size)
    assert table is backbone.get_layer("token_embedding").embeddings
    assert table.path == "token_embedding/embeddings"


def test_mask_and_segments_default_as_in_bert_model(micro_config):
    backbone = BertBackbone(micro_config)
    ids = features()["input_ids"]
    explicit = backbone.get_sequence_output(ids, np.ones_like(ids), np.zeros_like(ids))
    np.testing.assert_array_equal(numpy_of(backbone.get_sequence_output(ids)), numpy_of(explicit))
    with pytest.raises(TypeError, match="either a features dict"):
        backbone.get_pooled_output(features(), np.ones_like(ids))


def test_training_turns_dropout_on_in_the_getters(micro_config):
    backbone = BertBackbone(micro_config)
    x = features()
    off = numpy_of(backbone.get_sequence_output(x))
    np.testing.assert_array_equal(off, numpy_of(backbone.get_sequence_output(x)))
    assert not np.allclose(numpy_of(backbone.get_sequence_output(x, training=True)), off)


def test_classifier_getters_use_its_backbone_and_change_no_weight(micro_config):
    model = BertClassifier(BertBackbone(micro_config, name="bert"), num_labels=2)
    paths = [w.path for w in model.weights]
    x = features()
    pooled = model.get_pooled_output(x)
    np.testing.assert_array_equal(numpy_of(pooled), numpy_of(model.backbone.get_pooled_output(x)))
    np.testing.assert_allclose(numpy_of(model.get_layer("logits")(pooled)), numpy_of(model(x)),
                               atol=1e-6)
    assert model.get_embedding_table() is model.backbone.get_embedding_table()
    assert len(model.get_all_encoder_layers(x)) == micro_config.num_hidden_layers
    assert [w.path for w in model.weights] == paths  # the getters add and rename nothing


def test_padding_free_dropout_masks_real_tokens_as_the_padded_batch_does():
    """A batch cut to 5 positions gets the first 5 positions of the mask the batch padded to 8
    gets (same seed); plain Keras dropout draws a different one."""
    from bert_core.layers import PaddingFreeDropout

    x = np.ones((2, 8, 4), dtype="float32")
    padded = PaddingFreeDropout(0.5, length=8, seed=7)(x, training=True)
    cut = PaddingFreeDropout(0.5, length=8, seed=7)(x[:, :5], training=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(cut),
                                  keras.ops.convert_to_numpy(padded)[:, :5])
    assert set(np.unique(keras.ops.convert_to_numpy(padded))) == {0.0, 2.0}
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(PaddingFreeDropout(0.5, length=8)(x, training=False)), x)


# attention="fused": keras.ops.dot_product_attention in place of the einsum attention.

def fused_copy(model: BertClassifier, config: BertConfig) -> BertClassifier:
    fused = BertClassifier.from_bert_config(config, attention="fused")
    fused.set_weights(model.get_weights())
    return fused


def test_fused_attention_gives_the_einsum_outputs_on_a_padded_batch(micro_config):
    model = BertClassifier.from_bert_config(micro_config)
    fused = fused_copy(model, micro_config)
    x = features(batch=3, seq=16)  # row 0 is half padding
    for getter in ("get_sequence_output", "get_pooled_output"):
        np.testing.assert_allclose(numpy_of(getattr(fused, getter)(x)),
                                   numpy_of(getattr(model, getter)(x)), rtol=0, atol=1e-5)
    np.testing.assert_allclose(numpy_of(fused(x)), numpy_of(model(x)), rtol=0, atol=1e-5)


def test_fused_attention_refuses_to_train_with_attention_dropout(micro_config):
    """It cannot drop attention probabilities: training must not silently skip that dropout."""
    fused = BertClassifier.from_bert_config(micro_config, attention="fused")
    with pytest.raises(ValueError, match="attention_probs_dropout_prob=0"):
        fused(features(), training=True)
    no_attention_dropout = BertConfig(**{**micro_config.to_dict(),
                                         "attention_probs_dropout_prob": 0.0})
    trainable = BertClassifier.from_bert_config(no_attention_dropout, attention="fused")
    x = features()
    assert not np.allclose(numpy_of(trainable(x, training=True)), numpy_of(trainable(x)))
    with pytest.raises(ValueError, match="attention must be one of"):
        BertClassifier.from_bert_config(micro_config, attention="flash")


def test_the_attention_choice_survives_a_keras_file(tmp_path, micro_config):
    model = fused_copy(BertClassifier.from_bert_config(micro_config), micro_config)
    assert model.backbone.get_config()["attention"] == "fused"
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.backbone.attention == "fused"
    assert {loaded.backbone.get_layer(f"transformer_layer_{i}").attention
            for i in range(micro_config.num_hidden_layers)} == {"fused"}
    np.testing.assert_array_equal(numpy_of(loaded(features())), numpy_of(model(features())))
    default = BertBackbone(micro_config).get_config()
    assert default["attention"] == "einsum"
    del default["attention"]  # a .keras file saved before the option loads as einsum
    assert BertBackbone.from_config(default).attention == "einsum"
