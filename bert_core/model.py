"""The BERT backbone and the sentence-pair classifier on top of it.

    inputs: input_ids, segment_ids, input_mask          (batch, seq) int32
    token_embedding + segment_embedding + position_embedding -> embeddings_layer_norm -> dropout
    transformer_layer_0 ... transformer_layer_{N-1}     (batch, seq, hidden) "sequence_output"
    pooled_dense: tanh(dense(sequence_output[:, 0]))    (batch, hidden)      "pooled_output"
    classifier: dropout(0.1) -> logits                  (batch, num_labels)

Both are functional `keras.Model`s with `get_config()`, so they save and load as `.keras` files.
Both also have google-research/bert's BertModel getters (`get_pooled_output`, ...); see
`BertModelOutputs` for how they differ from the original's.
"""

from __future__ import annotations

import keras
import numpy as np

from bert_core.config import BertConfig
from bert_core.features import FEATURE_NAMES
from bert_core.layers import PaddingFreeDropout, PositionEmbedding, TransformerLayer, truncated_normal


def softmax(logits) -> np.ndarray:
    """Class probabilities from the classifier's logits, row-wise, in float64.

    >>> softmax(np.array([[0.0, 0.0], [0.0, np.log(3.0)]])).round(2).tolist()
    [[0.5, 0.5], [0.25, 0.75]]
    """
    z = np.asarray(keras.ops.convert_to_numpy(logits), np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def feature_inputs() -> dict[str, keras.KerasTensor]:
    return {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in FEATURE_NAMES}


class BertModelOutputs:
    """google-research/bert's BertModel getters, for code ported from modeling.py.

    The original builds its graph once, on the placeholders given to `BertModel(config,
    is_training, input_ids, input_mask, token_type_ids)`, so its getters take no arguments. A
    Keras model has no fixed inputs: it is called on whatever batch it is given. So each getter
    here takes the inputs and runs the model on them:

        backbone.get_sequence_output(input_ids, input_mask, segment_ids)
        backbone.get_sequence_output({"input_ids": ..., "input_mask": ..., "segment_ids": ...})

    `input_mask` defaults to all ones and `segment_ids` (the original's `token_type_ids`) to
    all zeros, as in BertModel. `training=True` turns dropout on, the original's `is_training`,
    which here is chosen per call, not at construction. The results are backend tensors
    (TensorFlow or JAX), not graph nodes. The original's other constructor arguments have no
    counterpart: `use_one_hot_embeddings` was a TPU speed switch, `scope` is the layer names.
    `get_embedding_table()` takes no inputs: it returns
    the token embedding variable, (vocab_size, hidden_size). The getters reuse the model's own
    layers, so they add no weights and rename nothing.
    """

    def get_pooled_output(self, input_ids, input_mask=None, segment_ids=None, *, training=False):
        """tanh(dense([CLS] row of the sequence output)): (batch, hidden)."""
        return self._run(self._node("pooled_dense"), input_ids, input_mask, segment_ids, training)

    def get_sequence_output(self, input_ids, input_mask=None, segment_ids=None, *,
                            training=False):
        """The last encoder layer's output: (batch, seq, hidden)."""
        last = f"transformer_layer_{self._encoder().bert_config.num_hidden_layers - 1}"
        return self._run(self._node(last), input_ids, input_mask, segment_ids, training)

    def get_all_encoder_layers(self, input_ids, input_mask=None, segment_ids=None, *,
                               training=False) -> list:
        """Every encoder layer's output, first to last: a list of (batch, seq, hidden)."""
        n = self._encoder().bert_config.num_hidden_layers
        nodes = [self._node(f"transformer_layer_{i}") for i in range(n)]
        outputs = self._run(nodes, input_ids, input_mask, segment_ids, training)
        return [outputs] if n == 1 else list(outputs)  # Keras hands one output back bare

    def get_embedding_output(self, input_ids, input_mask=None, segment_ids=None, *,
                             training=False):
        """Token + segment + position embeddings, LayerNorm, dropout: (batch, seq, hidden)."""
        return self._run(self._node("embeddings_dropout"), input_ids, input_mask, segment_ids,
                         training)

    def get_embedding_table(self) -> keras.Variable:
        """The token embeddings (the original's word_embeddings): (vocab_size, hidden_size)."""
        return self._encoder().get_layer("token_embedding").embeddings

    def _encoder(self) -> BertBackbone:
        return self if isinstance(self, BertBackbone) else self.backbone

    def _node(self, layer_name: str) -> keras.KerasTensor:
        return self._encoder().get_layer(layer_name).output

    def _run(self, outputs, input_ids, input_mask, segment_ids, training):
        """Run the backbone's graph up to `outputs` (pruned: later layers do not run)."""
        encoder = self._encoder()
        features = _features(input_ids, input_mask, segment_ids)
        # A view on the backbone's own graph: the same layers and weights, nothing new built.
        view = keras.Model(encoder.input, outputs, name=f"{encoder.name}_outputs")
        return view(features, training=training)


def _features(input_ids, input_mask=None, segment_ids=None) -> dict:
    """The model's int32 feature dict, from a dict or from BertModel's (ids, mask, token types)."""
    if isinstance(input_ids, dict):
        if input_mask is not None or segment_ids is not None:
            raise TypeError("pass either a features dict or input_ids, input_mask, segment_ids")
        features = input_ids
    else:
        features = {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids}
    ids = keras.ops.cast(features["input_ids"], "int32")
    mask, segments = features.get("input_mask"), features.get("segment_ids")
    return {"input_ids": ids,
            "input_mask": keras.ops.ones_like(ids) if mask is None else
            keras.ops.cast(mask, "int32"),
            "segment_ids": keras.ops.zeros_like(ids) if segments is None else
            keras.ops.cast(segments, "int32")}


@keras.saving.register_keras_serializable(package="bertflow")
class BertBackbone(BertModelOutputs, keras.Model):
    """BERT encoder: features in, {"sequence_output", "pooled_output"} out."""

    def __init__(self, bert_config: BertConfig | dict, dropout_length: int | None = None,
                 attention: str = "einsum", **kwargs):
        """`dropout_length`: the length batches are padded to at most (max_seq_length). Given, a
        batch cut to its longest pair gets the same dropout masks as padded to that length
        (layers.PaddingFreeDropout); None: Keras' plain dropout. `attention`: "einsum"
        (google-research/bert's) or "fused" (keras.ops.dot_product_attention, no attention-probs
        dropout: for inference and speed; see bert_core/layers.py)."""
        cfg = bert_config if isinstance(bert_config, BertConfig) else BertConfig(**bert_config)
        init = truncated_normal(cfg.initializer_range)
        inputs = feature_inputs()

        tokens = keras.layers.Embedding(cfg.vocab_size, cfg.hidden_size, embeddings_initializer=init,
                                        name="token_embedding")(inputs["input_ids"])
        segments = keras.layers.Embedding(cfg.type_vocab_size, cfg.hidden_size,
                                          embeddings_initializer=init,
                                          name="segment_embedding")(inputs["segment_ids"])
        positions = PositionEmbedding(cfg.max_position_embeddings, cfg.initializer_range,
                                      name="position_embedding")(tokens)
        x = keras.layers.Add(name="embeddings_add")([tokens, segments, positions])
        x = keras.layers.LayerNormalization(epsilon=cfg.layer_norm_eps,
                                            name="embeddings_layer_norm")(x)
        x = PaddingFreeDropout(cfg.hidden_dropout_prob, dropout_length,
                               name="embeddings_dropout")(x)
        for i in range(cfg.num_hidden_layers):
            x = TransformerLayer(
                num_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
                hidden_act=cfg.hidden_act, dropout=cfg.hidden_dropout_prob,
                attention_dropout=cfg.attention_probs_dropout_prob,
                layer_norm_eps=cfg.layer_norm_eps, initializer_range=cfg.initializer_range,
                dropout_length=dropout_length, attention=attention,
                name=f"transformer_layer_{i}")(x, inputs["input_mask"])
        first_token = keras.layers.Lambda(lambda h: h[:, 0, :], name="first_token")(x)
        pooled = keras.layers.Dense(cfg.hidden_size, activation="tanh", kernel_initializer=init,
                                    name="pooled_dense")(first_token)
        super().__init__(inputs=inputs, outputs={"sequence_output": x, "pooled_output": pooled},
                         **kwargs)
        self.bert_config = cfg
        self.dropout_length = dropout_length
        self.attention = attention

    def get_config(self):
        return {"bert_config": self.bert_config.to_dict(), "dropout_length": self.dropout_length,
                "attention": self.attention, "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="bertflow")
class BertClassifier(BertModelOutputs, keras.Model):
    """run_classifier's head: dropout on the pooled output, then a dense layer to the logits."""

    def __init__(self, backbone: BertBackbone, num_labels: int = 2, dropout: float = 0.1,
                 **kwargs):
        inputs = feature_inputs()
        pooled = backbone(inputs)["pooled_output"]
        x = keras.layers.Dropout(dropout, name="classifier_dropout")(pooled)
        logits = keras.layers.Dense(num_labels, kernel_initializer=truncated_normal(0.02),
                                    dtype="float32", name="logits")(x)  # float32 under mixed
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone
        self.num_labels = num_labels
        self.dropout = dropout

    @classmethod
    def from_bert_config(cls, bert_config: BertConfig, num_labels: int = 2,
                         dropout_length: int | None = None,
                         attention: str = "einsum") -> BertClassifier:
        return cls(BertBackbone(bert_config, dropout_length=dropout_length, attention=attention,
                                name="bert"),
                   num_labels=num_labels, name="bert_classifier")

    def get_config(self):
        return {"backbone": keras.saving.serialize_keras_object(self.backbone),
                "num_labels": self.num_labels, "dropout": self.dropout, "name": self.name,
                "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
