"""The registered Keras classifier as Hugging Face's BertForSequenceClassification and as ONNX, for
bench/serve.py to time the same weights three ways.

    hf_state_dict  every weight of BertClassifier under its Hugging Face name (torch [out, in]
                   kernels), from bert_core.checkpoint.name_table, the one table that also reads
                   HF layout into the Keras model; the head (run_classifier's output_weights,
                   no BertModel counterpart) becomes `classifier.weight` / `classifier.bias`
    to_hf          BertForSequenceClassification holding those weights, labels as id2label
    export_onnx    torch.onnx.export (dynamo) of it: inputs input_ids, attention_mask, token_type_ids
                   (batch, seq) int64, both axes dynamic; output logits (batch, num_labels)
    quantize       onnxruntime.quantization.quantize_dynamic: int8 weights of MatMul/Gemm
    logit_gap      the largest |logit| difference of a converted model against the Keras one
                   on the same packed ids
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bert_core.checkpoint import name_table

HEAD = {"logits/kernel": ("classifier.weight", True), "logits/bias": ("classifier.bias", False)}
HF_ACTIVATIONS = {"gelu_exact": "gelu", "gelu_tanh": "gelu_new", "relu": "relu",
                  "tanh": "tanh", "silu": "silu", "linear": "linear"}
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def hf_names(num_layers: int) -> dict[str, tuple[str, bool]]:
    """Keras variable path -> (BertForSequenceClassification parameter, transpose?).

    >>> hf_names(1)["transformer_layer_0/query/kernel"]
    ('bert.encoder.layer.0.attention.self.query.weight', True)
    >>> hf_names(1)["logits/kernel"]
    ('classifier.weight', True)
    """
    table = {row.keras: (f"bert.{row.hf}", row.hf_transpose)
             for row in name_table(num_layers) if row.hf is not None}
    return {**table, **HEAD}


def hf_state_dict(model) -> dict[str, np.ndarray]:
    """The Keras BertClassifier's weights keyed and oriented as Hugging Face's; every weight
    of the model is mapped exactly once, or KeyError names the one that is not."""
    names = hf_names(model.backbone.bert_config.num_hidden_layers)
    out = {}
    for variable in model.weights:
        name, transpose = names[variable.path]
        value = np.asarray(variable.numpy(), np.float32)
        out[name] = np.ascontiguousarray(value.T) if transpose else value
    if len(out) != len(names):
        raise KeyError(f"unmapped names: {sorted({n for n, _ in names.values()} - set(out))}")
    return out


def hf_config(bert_config, labels: list[str]):
    """transformers.BertConfig of the same architecture; `gelu_exact` is HF's `gelu`."""
    from transformers import BertConfig

    fields = bert_config.to_dict()
    fields["hidden_act"] = HF_ACTIVATIONS[fields["hidden_act"]]
    return BertConfig(**fields, num_labels=len(labels),
                      id2label=dict(enumerate(labels)),
                      label2id={label: i for i, label in enumerate(labels)})


def to_hf(model, labels: list[str]):
    """BertForSequenceClassification with the Keras model's weights, in eval mode; strict
    loading: a parameter missing on either side raises."""
    import torch
    from transformers import BertForSequenceClassification

    hf = BertForSequenceClassification(hf_config(model.backbone.bert_config, labels))
    state = {k: torch.from_numpy(v) for k, v in hf_state_dict(model).items()}
    buffers = {k for k, _ in hf.named_buffers()}  # position_ids: not a weight
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if set(missing) - buffers or unexpected:
        raise KeyError(f"missing {sorted(set(missing) - buffers)}, unexpected {unexpected}")
    return hf.eval()


def hf_tokenizer(folder: Path, do_lower_case: bool):
    """Hugging Face's fast WordPiece tokenizer on the vocab.txt in `folder` (from_pretrained:
    the constructor's vocab argument changed meaning in transformers 5)."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(folder), do_lower_case=do_lower_case)


def export_onnx(hf, path: Path) -> Path:
    """ONNX of `hf` (torch.export-based exporter) with dynamic batch and sequence axes, weights
    inside the one file."""
    import torch

    ids = torch.ones((2, 8), dtype=torch.long)
    axes = {name: {0: "batch", 1: "sequence"} for name in ONNX_INPUTS}
    with torch.no_grad():
        torch.onnx.export(hf, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(path),
                          input_names=list(ONNX_INPUTS), output_names=["logits"],
                          dynamic_axes={**axes, "logits": {0: "batch"}}, dynamo=True,
                          external_data=False)
    return path


def quantize(float_path: Path, int8_path: Path) -> Path:
    """Dynamic int8 quantization of the weights (activations quantized per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(float_path), str(int8_path), weight_type=QuantType.QInt8)
    return int8_path


def ort_session(path: Path, threads: int):
    """An ONNX Runtime CPU session: every graph optimisation, `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_logits(session, ids, mask, segments) -> np.ndarray:
    feed = dict(zip(ONNX_INPUTS, (np.asarray(a, np.int64) for a in (ids, mask, segments))))
    return session.run(["logits"], feed)[0]


def hf_logits(hf, ids, mask, segments) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = hf(input_ids=torch.as_tensor(np.asarray(ids, np.int64)),
                 attention_mask=torch.as_tensor(np.asarray(mask, np.int64)),
                 token_type_ids=torch.as_tensor(np.asarray(segments, np.int64)))
    return out.logits.numpy()


def logit_gap(keras_model, features, other) -> float:
    """max |logits(keras) - logits(other)| on the same packed features; `other(ids, mask,
    segments)` returns (batch, num_labels) logits."""
    ours = np.asarray(keras_model(features.as_dict(), training=False), np.float64)
    theirs = np.asarray(other(features.input_ids, features.input_mask, features.segment_ids),
                        np.float64)
    return float(np.abs(ours - theirs).max())


def converted(text_model, labels: list[str], work: Path, threads: int) -> dict:
    """The served TextModel's Keras model as HF model, HF's fast tokenizer on its vocab, and
    ORT float and int8 sessions of its ONNX export (files in `work`)."""
    vocab = work / "vocab.txt"
    inv = text_model.tokenizer.inv_vocab
    vocab.write_text("".join(f"{inv[i]}\n" for i in range(len(inv))), encoding="utf-8")
    hf = to_hf(text_model.model, labels)
    onnx_float = export_onnx(hf, work / "model.onnx")
    onnx_int8 = quantize(onnx_float, work / "model.int8.onnx")
    return {"hf": hf, "tokenizer": hf_tokenizer(work, text_model.tokenizer.do_lower_case),
            "ort": ort_session(onnx_float, threads), "ort_int8": ort_session(onnx_int8, threads),
            "onnx_mb": {"float": round(onnx_float.stat().st_size / 2**20, 1),
                        "int8": round(onnx_int8.stat().st_size / 2**20, 1)}}


def pipeline_way(hf, tokenizer, labels: list[str], max_length: int, batch: int):
    """pipeline("text-classification") on CPU: (a, b) texts -> (n, num_labels) probabilities."""
    from transformers import pipeline

    pipe = pipeline("text-classification", model=hf, tokenizer=tokenizer, device=-1)

    def predict(a, b):
        out = pipe([{"text": x, "text_pair": y} for x, y in zip(a, b)], batch_size=batch,
                   top_k=None, truncation=True, max_length=max_length)
        return np.array([[{r["label"]: r["score"] for r in row}[label] for label in labels]
                         for row in out], np.float64)
    return predict


def ort_way(session, tokenizer, max_length: int):
    """HF's fast tokenizer (each call padded to its longest), ORT, softmax: (a, b) texts ->
    (n, num_labels) probabilities."""
    from bert_core.model import softmax

    def predict(a, b):
        enc = tokenizer(a, b, padding="longest", truncation=True, max_length=max_length,
                        return_tensors="np")
        return softmax(ort_logits(session, enc["input_ids"], enc["attention_mask"],
                                  enc["token_type_ids"]))
    return predict


def accuracy(probs: np.ndarray, gold: list[str], labels: list[str]) -> float:
    """Share of pairs whose likeliest label is the gold one.

    >>> accuracy(np.array([[0.2, 0.8], [0.9, 0.1]]), ["1", "1"], ["0", "1"])
    0.5
    """
    return float(np.mean(np.asarray(labels)[probs.argmax(1)] == np.asarray(gold)))


def ids_differing(ours, theirs, a: list[str], b: list[str], max_length: int) -> int:
    """Pairs whose (input ids, segment ids) differ between FullTokenizer `ours` packed as
    run_classifier packs and Hugging Face tokenizer `theirs`."""
    from bert_core.features import encode_pairs

    mine = encode_pairs(ours, a, b, max_length)
    other = theirs(a, b, truncation=True, max_length=max_length)
    return int(sum(list(ids[mask == 1]) != i or list(seg[mask == 1]) != s
                   for ids, seg, mask, i, s in zip(mine.input_ids, mine.segment_ids,
                                                   mine.input_mask, other["input_ids"],
                                                   other["token_type_ids"])))


def parity(text_model, models: dict, a: list[str], b: list[str], pairs: int) -> dict:
    """Largest logit gap of each converted model to the Keras one on the first `pairs` pairs,
    packed and padded as the pyfunc does; and the pairs of (a, b) that HF's tokenizer encodes
    otherwise than FullTokenizer."""
    from bert_core.features import encode_pairs

    features = encode_pairs(text_model.tokenizer, a[:pairs], b[:pairs], text_model.max_seq_length)
    gaps = {way: logit_gap(text_model.model, features, lambda *x, s=models[way]: ort_logits(s, *x))
            for way in ("ort", "ort_int8")}
    gaps["hf"] = logit_gap(text_model.model, features, lambda *x: hf_logits(models["hf"], *x))
    return {"pairs": pairs, "max_logit_gap": {k: float(f"{v:.3g}") for k, v in gaps.items()},
            "tokenizer_pairs_differing": ids_differing(text_model.tokenizer, models["tokenizer"],
                                                       a, b, text_model.max_seq_length),
            "tokenizer_pairs_checked": len(a)}


def quantized_accuracy(models: dict, a, b, gold, labels, max_length: int, batch: int) -> dict:
    """int8 against float ONNX on every pair given: accuracy of each, the change, the share of
    pairs given the same label, the largest probability gap."""
    probs = {w: np.concatenate([ort_way(models[w], models["tokenizer"], max_length)(
        a[i:i + batch], b[i:i + batch]) for i in range(0, len(a), batch)])
        for w in ("ort", "ort_int8")}
    acc = {w: round(accuracy(p, gold, labels), 4) for w, p in probs.items()}
    same = probs["ort"].argmax(1) == probs["ort_int8"].argmax(1)
    return {"pairs": len(a), "float": acc["ort"], "int8": acc["ort_int8"],
            "change": round(acc["ort_int8"] - acc["ort"], 4),
            "agreement": round(float(np.mean(same)), 4),
            "max_prob_gap": float(f"{np.abs(probs['ort'] - probs['ort_int8']).max():.3g}")}
