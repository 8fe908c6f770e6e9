"""BertClassifier as an ONNX graph, built op by op from the Keras model's weights.

    input_ids, input_mask, segment_ids   (batch, seq) int32, both axes dynamic
    Gather(token) + Gather(segment) + Slice(position)[:seq] -> LayerNormalization
    per transformer_layer_i:
        q, k, v = x W + b, split into heads          (batch, heads, seq, head_size)
        softmax(q k^T / sqrt(head_size) + (1 - mask) * -10000) v
        LayerNorm(x + dense(context)); LayerNorm(h + dense(act(dense(h))))
    tanh(dense(sequence_output[:, 0]))               pooled (batch, hidden)
    logits = dense(pooled)                           (batch, num_labels); one unit for regression

The numerics are bert_core/layers.py's, read off the layers themselves (epsilon, heads, activation:
`gelu_tanh` as tf.nn.gelu's tanh form, `gelu_exact` with Erf), so ONNX Runtime's logits match
Keras' to float rounding. Only numpy and onnx are needed: no torch, no converter.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bert_core.features import FEATURE_NAMES
from bert_core.layers import MASK_ADDER

OPSET = 17  # LayerNormalization's first opset
OUTPUT = "logits"
_GELU_TANH = math.sqrt(2.0 / math.pi)  # tf.nn.gelu(approximate=True)'s constant


class _Graph:
    """Nodes and initializers under construction; each `op` returns its output's name.

    >>> g = _Graph()
    >>> g.op("Add", g.op("Relu", "x"), g.scalar(1.0))
    'add_2'
    >>> [n.op_type for n in g.nodes], [t.name for t in g.initializers]
    (['Relu', 'Add'], ['scalar_1.0'])
    """

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value) -> str:
        array = np.asarray(value)
        array = array.astype(np.float32) if array.dtype.kind == "f" else array
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def scalar(self, value: float) -> str:
        """A float32 scalar constant, named after its value."""
        name = f"scalar_{value!r}"
        if all(t.name != name for t in self.initializers):
            self.const(name, np.float32(value))
        return name

    def op(self, op_type: str, *inputs: str, name: str | None = None, **attrs) -> str:
        self._count += 1
        out = name or f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out


def keras_weights(model) -> dict[str, np.ndarray]:
    """Every variable of the model by its Keras path (`transformer_layer_0/query/kernel`)."""
    return {v.path: np.asarray(v.numpy(), np.float32) for v in model.weights}


def _dense(g: _Graph, x: str, w: dict[str, np.ndarray], layer: str) -> str:
    kernel = g.const(f"{layer}/kernel", w[f"{layer}/kernel"])
    return g.op("Add", g.op("MatMul", x, kernel), g.const(f"{layer}/bias", w[f"{layer}/bias"]))


def _layer_norm(g: _Graph, x: str, w: dict[str, np.ndarray], layer: str,
                epsilon: float) -> str:
    return g.op("LayerNormalization", x, g.const(f"{layer}/gamma", w[f"{layer}/gamma"]),
                g.const(f"{layer}/beta", w[f"{layer}/beta"]), axis=-1, epsilon=float(epsilon))


def _activation(g: _Graph, x: str, name: str) -> str:
    """bert_core.layers.activation(name) as ONNX ops (the GELUs in the form tf.nn.gelu computes,
    which ONNX Runtime also fuses into one op)."""
    if name == "gelu_tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = g.op("Pow", x, g.scalar(3.0))
        inner = g.op("Add", x, g.op("Mul", cube, g.scalar(0.044715)))
        return _half_x_one_plus(g, x, g.op("Tanh", g.op("Mul", inner, g.scalar(_GELU_TANH))))
    if name == "gelu_exact":  # 0.5 x (1 + erf(x / sqrt(2)))
        return _half_x_one_plus(g, x, g.op("Erf", g.op("Div", x, g.scalar(math.sqrt(2.0)))))
    if name == "silu":
        return g.op("Mul", x, g.op("Sigmoid", x))
    return g.op({"relu": "Relu", "tanh": "Tanh", "linear": "Identity"}[name], x)


def _half_x_one_plus(g: _Graph, x: str, y: str) -> str:
    return g.op("Mul", g.op("Mul", x, g.op("Add", y, g.scalar(1.0))), g.scalar(0.5))


def _embeddings(g: _Graph, w: dict[str, np.ndarray], epsilon: float) -> str:
    """LayerNorm(token + segment + position embeddings): (batch, seq, hidden)."""
    tokens = g.op("Gather", g.const("token_embedding", w["token_embedding/embeddings"]),
                  "input_ids")
    segments = g.op("Gather", g.const("segment_embedding", w["segment_embedding/embeddings"]),
                    "segment_ids")
    seq = g.op("Slice", g.op("Shape", "input_ids"), g.const("one", np.array([1])),
               g.const("two", np.array([2])))  # (1,) int64
    positions = g.op("Slice", g.const("position_embedding", w["position_embedding/embeddings"]),
                     g.const("zero", np.array([0])), seq, g.const("axis_0", np.array([0])))
    summed = g.op("Add", g.op("Add", tokens, segments), positions)
    return _layer_norm(g, summed, w, "embeddings_layer_norm", epsilon)


def _attention(g: _Graph, x: str, adder: str, w: dict[str, np.ndarray], name: str,
               heads: int, head_size: int) -> str:
    """Multi-head self-attention's context before its output dense: (batch, seq, hidden)."""
    split = g.const(f"{name}/heads_shape", np.array([0, 0, heads, head_size]))

    def project(sub: str, perm: list[int]) -> str:  # (batch, seq, hidden) -> perm of 4 axes
        return g.op("Transpose", g.op("Reshape", _dense(g, x, w, f"{name}/{sub}"), split),
                    perm=perm)

    q = project("query", [0, 2, 1, 3])  # (batch, heads, seq, head_size)
    k = project("key", [0, 2, 3, 1])  # (batch, heads, head_size, seq)
    v = project("value", [0, 2, 1, 3])
    scores = g.op("Mul", g.op("MatMul", q, k), g.scalar(1.0 / math.sqrt(head_size)))
    probs = g.op("Softmax", g.op("Add", scores, adder), axis=-1)  # (batch, heads, seq, seq)
    context = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])
    return g.op("Reshape", context, g.const(f"{name}/merge_shape",
                                            np.array([0, 0, heads * head_size])))


def _transformer_layer(g: _Graph, x: str, adder: str, w: dict[str, np.ndarray], layer) -> str:
    """One post-LN block as TransformerLayer.call computes it."""
    name, heads = layer.name, layer.num_heads
    head_size = w[f"{name}/query/kernel"].shape[0] // heads
    context = _attention(g, x, adder, w, name, heads, int(head_size))
    attended = g.op("Add", _dense(g, context, w, f"{name}/attention_output"), x)
    hidden = _layer_norm(g, attended, w, f"{name}/attention_layer_norm",
                         layer.attention_layer_norm.epsilon)
    ff = _activation(g, _dense(g, hidden, w, f"{name}/intermediate"), layer.hidden_act)
    out = g.op("Add", _dense(g, ff, w, f"{name}/output"), hidden)
    return _layer_norm(g, out, w, f"{name}/output_layer_norm", layer.output_layer_norm.epsilon)


def build_graph(model) -> onnx.ModelProto:
    """The ONNX model of a BertClassifier: the three int32 features in, `logits` out."""
    w, backbone = keras_weights(model), model.backbone
    g = _Graph()
    x = _embeddings(g, w, backbone.get_layer("embeddings_layer_norm").epsilon)
    keep = g.op("Cast", "input_mask", to=TensorProto.FLOAT)
    adder = g.op("Mul", g.op("Sub", g.scalar(1.0), keep), g.scalar(MASK_ADDER))  # (batch, seq)
    adder = g.op("Unsqueeze", adder, g.const("axes_1_2", np.array([1, 2])))  # (batch, 1, 1, seq)
    for i in range(backbone.bert_config.num_hidden_layers):
        x = _transformer_layer(g, x, adder, w, backbone.get_layer(f"transformer_layer_{i}"))
    first = g.op("Gather", x, g.const("first_position", np.array(0)), axis=1)  # (batch, hidden)
    pooled = g.op("Tanh", _dense(g, first, w, "pooled_dense"))
    g.op("Identity", _dense(g, pooled, w, "logits"), name=OUTPUT)
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", "seq"])
              for n in FEATURE_NAMES]
    outputs = [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT,
                                             ["batch", model.num_labels])]
    graph = helper.make_graph(g.nodes, "bert_classifier", inputs, outputs, g.initializers)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="bertflow")
    onnx_model.ir_version = 8  # opset 17's IR: what every onnxruntime since 1.13 reads
    onnx.checker.check_model(onnx_model)
    return onnx_model


def export_onnx(model, path: str | os.PathLike) -> Path:
    """Write `build_graph(model)` to `path` (under a temporary name first, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        onnx.save_model(build_graph(model), partial)
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)
    return path
