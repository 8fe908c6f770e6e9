"""BERT's building blocks in Keras 3, written with `keras.ops` only (TensorFlow and JAX backends).

Numerics follow google-research/bert's `modeling.py`: padding adds -10000 to attention scores,
scores are scaled by 1/sqrt(head_size), LayerNorm comes after each residual (post-LN).

Self-attention is computed one of two ways (`TransformerLayer(attention=...)`):

    "einsum"  softmax(q k^T / sqrt(head_size) - 10000 * padding) v, with dropout on the
              probabilities: google-research/bert's code, the default, the one to train with
    "fused"   keras.ops.dot_product_attention on the same scores and the same -10000 bias: one
              op, cuDNN flash attention on a GPU that has it (bfloat16 / float16), else XLA's.
              It cannot drop attention probabilities, so it skips that dropout (hidden dropout
              still applies): for inference and speed measurement. Training with it needs
              attention_probs_dropout_prob = 0 (a different recipe), else the layer raises.
"""

from __future__ import annotations

import math

import keras
from keras import ops

MASK_ADDER = -10000.0
ATTENTION = ("einsum", "fused")


def activation(name: str):
    """The function behind a `BertConfig.hidden_act` name."""
    functions = {
        "gelu_tanh": lambda x: ops.gelu(x, approximate=True),
        "gelu_exact": lambda x: ops.gelu(x, approximate=False),
        "relu": ops.relu,
        "tanh": ops.tanh,
        "silu": ops.silu,
        "linear": lambda x: x,
    }
    return functions[name]


def truncated_normal(stddev: float) -> keras.initializers.Initializer:
    return keras.initializers.TruncatedNormal(stddev=stddev)


@keras.saving.register_keras_serializable(package="bertflow")
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute positions: returns the first `seq` rows, shaped (1, seq, hidden)."""

    def __init__(self, max_length: int, initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.max_length = max_length
        self.initializer_range = initializer_range

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.max_length, input_shape[-1]),
            initializer=truncated_normal(self.initializer_range))

    def call(self, inputs):  # inputs: (batch, seq, hidden)
        seq, hidden = ops.shape(inputs)[1], ops.shape(inputs)[2]
        table = ops.convert_to_tensor(self.embeddings)  # a bare Variable breaks JAX tracing
        positions = ops.slice(table, (0, 0), (seq, hidden))
        return ops.expand_dims(ops.cast(positions, inputs.dtype), 0)

    def compute_output_shape(self, input_shape):
        return (1, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "max_length": self.max_length,
                "initializer_range": self.initializer_range}


@keras.saving.register_keras_serializable(package="bertflow")
class PaddingFreeDropout(keras.layers.Layer):
    """Dropout whose mask on a real token does not depend on how far its batch is padded.

    Keras' Dropout draws its noise in the shape of its input, so the same batch padded to 128 and
    cut to its longest pair gets different masks, and trains a different model. Here the noise is
    drawn as if the sequence axes (`axes`) were `length` long and cut to the input: a batch cut
    to n positions sees exactly the first n positions of the padded batch's mask. The cost is
    the padded run's draw. With `length` None it is plain dropout.
    """

    def __init__(self, rate: float, length: int | None = None, axes: tuple[int, ...] = (1,),
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.length, self.axes = float(rate), length, tuple(axes)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=False):
        if not training or self.rate == 0:
            return x
        shape = ops.shape(x)
        full = tuple(self.length if self.length and i in self.axes else shape[i]
                     for i in range(len(x.shape)))
        noise = keras.random.uniform(full, seed=self.seed_generator, dtype="float32")  # bfloat16 noise would skew the rate
        if self.length:
            noise = ops.slice(noise, [0] * len(full), shape)
        keep = ops.cast(noise >= self.rate, x.dtype)
        return x * keep / ops.cast(1.0 - self.rate, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "length": self.length,
                "axes": list(self.axes)}


@keras.saving.register_keras_serializable(package="bertflow")
class TransformerLayer(keras.layers.Layer):
    """One post-LayerNorm encoder block: self-attention, add & norm, feed-forward, add & norm."""

    def __init__(self, num_heads: int, intermediate_size: int, hidden_act: str = "gelu_tanh",
                 dropout: float = 0.1, attention_dropout: float = 0.1,
                 layer_norm_eps: float = 1e-12, initializer_range: float = 0.02,
                 dropout_length: int | None = None, attention: str = "einsum", **kwargs):
        super().__init__(**kwargs)
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
        self.attention = attention
        self.dropout_length = dropout_length  # PaddingFreeDropout's length
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self._activation = activation(hidden_act)

    def build(self, input_shape):  # input_shape: (batch, seq, hidden)
        hidden = input_shape[-1]
        self._head_size = hidden // self.num_heads

        def dense(units, name):
            return keras.layers.Dense(units, kernel_initializer=truncated_normal(
                self.initializer_range), dtype=self.dtype_policy, name=name)

        def norm(name):
            return keras.layers.LayerNormalization(
                epsilon=self.layer_norm_eps, dtype=self.dtype_policy, name=name)

        # Names mirror the checkpoint conversion table in bert_core/checkpoint.py.
        self.query, self.key, self.value = (dense(hidden, n) for n in ("query", "key", "value"))
        self.attention_output = dense(hidden, "attention_output")
        self.attention_layer_norm = norm("attention_layer_norm")
        self.intermediate = dense(self.intermediate_size, "intermediate")
        self.output_dense = dense(hidden, "output")
        self.output_layer_norm = norm("output_layer_norm")
        # (batch, heads, seq, seq) and (batch, seq, hidden)
        self.attention_probs_dropout = PaddingFreeDropout(
            self.attention_dropout, self.dropout_length, axes=(2, 3), name="attention_dropout")
        self.hidden_dropout = PaddingFreeDropout(self.dropout, self.dropout_length,
                                                 name="hidden_dropout")
        for layer in (self.query, self.key, self.value, self.attention_output,
                      self.attention_layer_norm, self.output_layer_norm):
            layer.build(input_shape)
        self.intermediate.build(input_shape)
        self.output_dense.build((*input_shape[:-1], self.intermediate_size))

    def call(self, hidden, attention_mask, training=None):
        # hidden: (batch, seq, hidden); attention_mask: (batch, seq), 1 on real tokens
        if self.attention == "fused":
            if training and self.attention_dropout > 0:
                raise ValueError(
                    f"{self.name}: attention='fused' cannot apply attention-probs dropout "
                    f"(rate {self.attention_dropout}) in training; train with attention='einsum', "
                    "or set attention_probs_dropout_prob=0 to train without that dropout")
            attended = self._fused_attention(hidden, attention_mask)
        else:
            attended = self._self_attention(hidden, attention_mask, training)
        attended = self.hidden_dropout(self.attention_output(attended), training=training)
        hidden = self.attention_layer_norm(attended + hidden)
        ff = self._activation(self.intermediate(hidden))
        ff = self.hidden_dropout(self.output_dense(ff), training=training)
        return self.output_layer_norm(ff + hidden)

    def _self_attention(self, hidden, attention_mask, training):
        head_size = self._head_size

        def heads(x):  # (batch, seq, hidden) -> (batch, heads, seq, head_size)
            x = ops.reshape(x, (ops.shape(x)[0], -1, self.num_heads, head_size))
            return ops.transpose(x, (0, 2, 1, 3))

        q, k, v = heads(self.query(hidden)), heads(self.key(hidden)), heads(self.value(hidden))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))  # (batch, heads, seq, seq)
        scores = scores * ops.cast(1.0 / math.sqrt(head_size), scores.dtype)
        adder = (1.0 - ops.cast(attention_mask, scores.dtype)) * MASK_ADDER
        scores = scores + adder[:, None, None, :]  # padding keys get -10000
        probs = self.attention_probs_dropout(ops.softmax(scores, axis=-1), training=training)
        context = ops.transpose(ops.matmul(probs, v), (0, 2, 1, 3))  # (batch, seq, heads, head)
        return ops.reshape(context, (ops.shape(context)[0], -1, self.num_heads * head_size))

    def _fused_attention(self, hidden, attention_mask):
        """The same attention as `_self_attention` without its dropout, as one fused op."""
        batch, seq = ops.shape(hidden)[0], ops.shape(hidden)[1]

        def heads(x):  # (batch, seq, hidden) -> (batch, seq, heads, head_size): the op's layout
            return ops.reshape(x, (batch, seq, self.num_heads, self._head_size))

        q, k, v = heads(self.query(hidden)), heads(self.key(hidden)), heads(self.value(hidden))
        adder = (1.0 - ops.cast(attention_mask, q.dtype)) * MASK_ADDER  # (batch, seq)
        # (batch, 1, seq, seq): cuDNN takes a bias as wide as the scores, not (batch, 1, 1, seq)
        bias = ops.broadcast_to(adder[:, None, None, :], (batch, 1, seq, seq))
        context = ops.dot_product_attention(q, k, v, bias=bias,
                                            scale=1.0 / math.sqrt(self._head_size))
        return ops.reshape(context, (batch, seq, self.num_heads * self._head_size))

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "intermediate_size": self.intermediate_size, "hidden_act": self.hidden_act,
                "dropout": self.dropout, "attention_dropout": self.attention_dropout,
                "layer_norm_eps": self.layer_norm_eps,
                "initializer_range": self.initializer_range,
                "dropout_length": self.dropout_length, "attention": self.attention}
