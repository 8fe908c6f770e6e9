"""bert_core/onnx_export.py: ONNX Runtime's logits on the exported graph are Keras' own, for
pair classifiers, both GELUs, a regression head, batches of one to many and widths up to the
model's positions; the inputs take any batch and width."""

from __future__ import annotations

import keras
import numpy as np
import onnx
import onnxruntime
import pytest

from bert_core.config import BertConfig
from bert_core.model import BertClassifier
from bert_core.onnx_export import OUTPUT, export_onnx

TOLERANCE = 1e-5


def pairs(batch: int, width: int, vocab: int, seed: int) -> dict[str, np.ndarray]:
    """Random packed pairs of uneven lengths: ids, a mask of 1s then 0s, segment 1 after a cut."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, width + 1, batch)
    lengths[0] = width  # one row fills the width
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int32)
    cut = (lengths // 2)[:, None]
    return {"input_ids": rng.integers(1, vocab, (batch, width)).astype(np.int32) * mask,
            "input_mask": mask,
            "segment_ids": (np.arange(width)[None, :] >= cut).astype(np.int32) * mask}


def classifier(act: str, num_labels: int, seed: int = 0) -> BertClassifier:
    """A 2-layer model whose weights are scaled up, so that logits are far from zero and a wrong
    op shows: random init gives logits near 0, where many mistakes hide."""
    keras.utils.set_random_seed(seed)
    model = BertClassifier.from_bert_config(BertConfig(
        vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, hidden_act=act, max_position_embeddings=64), num_labels=num_labels)
    for weight in model.weights:
        if weight.path.endswith(("kernel", "embeddings")):
            weight.assign(weight * 20.0)
    return model


def session(path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("act,num_labels", [("gelu_tanh", 2), ("gelu_exact", 3), ("relu", 1)])
def test_onnx_runtime_answers_as_keras(act, num_labels, tmp_path):
    model = classifier(act, num_labels)
    run = session(export_onnx(model, tmp_path / "model.onnx"))
    for seed, (batch, width) in enumerate([(1, 8), (3, 24), (16, 40), (5, 64)]):
        features = pairs(batch, width, 97, seed)
        expected = np.asarray(model.predict_on_batch(features))
        got = run.run([OUTPUT], features)[0]
        assert got.shape == (batch, num_labels)
        assert np.abs(expected).max() > 0.1  # the logits are not all near zero
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


def test_padding_does_not_change_a_row(tmp_path):
    """A pair's logits are the same alone at its own width and padded in a wider batch."""
    model = classifier("gelu_tanh", 2, seed=1)
    run = session(export_onnx(model, tmp_path / "model.onnx"))
    wide = pairs(4, 32, 97, seed=5)
    length = int(wide["input_mask"][1].sum())
    alone = {name: values[1:2, :length] for name, values in wide.items()}
    np.testing.assert_allclose(run.run([OUTPUT], alone)[0][0], run.run([OUTPUT], wide)[0][1],
                               rtol=0, atol=TOLERANCE)


def test_the_file_is_a_checked_model_with_dynamic_axes_and_no_leftovers(tmp_path):
    path = export_onnx(classifier("gelu_tanh", 2), tmp_path / "out" / "model.onnx")
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]
    graph = onnx.load(path).graph
    onnx.checker.check_model(onnx.load(path), full_check=True)
    shapes = {i.name: ([d.dim_param for d in i.type.tensor_type.shape.dim],
                       i.type.tensor_type.elem_type) for i in graph.input}
    assert shapes == {name: (["batch", "seq"], onnx.TensorProto.INT32)
                      for name in ("input_ids", "input_mask", "segment_ids")}
    assert [o.name for o in graph.output] == ["logits"]
