"""Tiny trained models of any task, in the folder layout the train stage writes, and evaluation
reports for them: what the register stage and `bertflow predict` are tested on; and the gate's
evidence for one (an evaluation set, the model's own outputs on it as evaluate writes them).

    trained = write_trained(tmp / "model", "mnli", ("contradiction", "entailment", "neutral"))
    report = write_report(tmp / "report", {"accuracy": 0.7}, splits={"dev_mismatched": {...}})

    frame = eval_texts(40)                       # guid, text_a, text_b; then add a label column
    outputs = model_outputs(trained, frame)      # the Keras model's probabilities
    examples = write_examples(tmp / "eval.parquet", frame)
    report = write_report(tmp / "report", metrics, dev=(frame, outputs, trained.labels))
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from bert_core.config import BertConfig
from bert_core.features import encode_pairs
from bert_core.model import BertBackbone, BertClassifier, softmax
from bert_core.tokenization import FullTokenizer
from data_contracts.specs import TaskConfig, task_spec
from tasks.atomic import write_json
from tasks.fingerprint import sha256_file, stamp
from tasks.incumbent import Examples, Scores
from tasks.promotion import Verdict
from tasks.records import EvalReport, TrainedModel
from tasks.report import write_predictions
from tests.fixtures import tiny_vocab
from tests.task_files import sentence

MAX_SEQ = 16
HISTORY = {"steps": [1, 2, 3], "loss": [0.71, 0.64, 0.52], "learning_rate": [1e-5, 2e-5, 1e-5],
           "epochs": [{"epoch": 1, "step": 3, "loss": 0.62, "accuracy": 0.6}],
           "resumed_from_step": None, "examples_per_second": 120.0}


def write_trained(folder: Path, task: str, labels: tuple[str, ...], scale: float = 200.0,
                  seed: int = 0, gain: float = 1.0) -> TrainedModel:
    """A one-layer BERT over tiny_vocab with a logit per label (one output, the score, when
    `labels` is empty: regression), its head scaled by `scale` so that texts differ visibly.
    `gain` multiplies every embedding and kernel: at 30 (and `scale` 1) the answers vary from
    text to text by whole classes, where at 1 a random model answers every text alike."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in vocab))
    keras.utils.set_random_seed(seed)
    model = BertClassifier(BertBackbone(BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64)), num_labels=len(labels) or 1)
    for weight in model.weights if gain != 1.0 else ():
        if weight.path.endswith(("kernel", "embeddings")):
            weight.assign(weight * gain)
    kernel, bias = model.get_layer("logits").get_weights()
    model.get_layer("logits").set_weights([kernel * scale, bias])
    model.save(folder / "model.keras")
    (folder / "history.json").write_text(json.dumps(HISTORY))
    digest = hashlib.sha256((folder / "model.keras").read_bytes()).hexdigest()
    return TrainedModel(model_dir=str(folder), model_sha256=digest, steps=3, seconds=1.5,
                        init="scratch", max_seq_length=MAX_SEQ, do_lower_case=True,
                        labels=labels, task=task, pair=task_spec(TaskConfig(name=task)).pair)


def keras_outputs(trained: TrainedModel, texts_a: list[str],
                  texts_b: list[str] | None) -> np.ndarray:
    """What the trained Keras model itself outputs for the texts: (n, labels) logits, or (n, 1)."""
    keras_model = keras.saving.load_model(trained.keras_file, compile=False)
    features = encode_pairs(FullTokenizer(trained.vocab_file), texts_a, texts_b, MAX_SEQ)
    return keras.ops.convert_to_numpy(keras_model(features.as_dict(), training=False))


def model_outputs(trained: TrainedModel, frame: pd.DataFrame) -> np.ndarray:
    """The Keras model's answers to the frame's texts as evaluate records them: class
    probabilities (n, labels), or scores (n,)."""
    texts_b = frame["text_b"].tolist() if trained.pair else None
    outputs = keras_outputs(trained, frame["text_a"].tolist(), texts_b)
    return softmax(outputs) if trained.labels else outputs[:, 0].astype(np.float64)


def eval_texts(rows: int, seed: int = 0, pair: bool = True) -> pd.DataFrame:
    """An evaluation set's guid, text_a and text_b (None for single sentences), no labels yet."""
    rng = random.Random(seed)
    return pd.DataFrame({"guid": [f"dev-{i}" for i in range(1, rows + 1)],
                         "text_a": [sentence(rng) for _ in range(rows)],
                         "text_b": [sentence(rng) if pair else None for _ in range(rows)]})


def write_examples(path: Path, frame: pd.DataFrame) -> Examples:
    """The frame (guid, text_a, text_b, label) as the evaluation-set stage writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[["guid", "text_a", "text_b", "label"]].to_parquet(path, index=False)
    return Examples(path=str(path), sha256=sha256_file(path), rows=len(frame),
                    files=(stamp(path),))


def write_scores(path: Path, frame: pd.DataFrame, outputs: np.ndarray,
                 labels: tuple[str, ...], model_uri: str) -> Scores:
    """A model's outputs on the frame's examples as the champion is scored: guid, p_<label>..."""
    columns = [f"p_{label}" for label in labels] or ["score"]
    scores = pd.DataFrame(np.asarray(outputs).reshape(len(frame), -1), columns=columns)
    scores.insert(0, "guid", frame["guid"].tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    scores.to_parquet(path, index=False)
    return Scores(path=str(path), model_uri=model_uri, files=(stamp(path),))


def write_manifest(path: Path, task: str, labels: tuple[str, ...],
                   positive: str | None) -> Path:
    """The part of the shards' manifest.json the gate reads: labels and the positive class."""
    write_json(path, {"task": task, "labels": list(labels), "regression": not labels,
                      "positive": positive})
    return path


def write_report(folder: Path, metrics: dict[str, float], collapsed: bool = False,
                 splits: dict[str, dict[str, float]] | None = None,
                 dev: tuple[pd.DataFrame, np.ndarray, tuple[str, ...]] | None = None
                 ) -> EvalReport:
    """An evaluation report folder with `metrics` as dev's (and `splits` as other splits');
    with `dev` (the examples, the model's outputs on them, its labels), dev_predictions.tsv
    holds those outputs as evaluate writes them."""
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if dev is None:
        (folder / "dev_predictions.tsv").write_text("index\tlabel\tprobability\n0\t1\t0.9\n")
    else:
        frame, outputs, labels = dev
        truth = (frame["label"].astype(np.float64).to_numpy() if not labels else
                 np.array([labels.index(str(y)) for y in frame["label"]]))
        write_predictions(frame["guid"].tolist(), truth, outputs, labels,
                          folder / "dev_predictions.tsv")
    (folder / "summary.md").write_text(f"# dev {metrics}\n")
    return EvalReport(report_dir=str(folder), metrics=metrics, confusion_matrix=[],
                      collapsed=collapsed, splits=splits or {},
                      collapse_reason="predicts 1 for 100% of dev" if collapsed else None)


def decided(code: str, value: float, incumbent: str = "majority-class predictor",
            incumbent_value: float | None = 0.5, metric: str = "f1") -> Verdict:
    """A verdict as the gate hands one over, for what registering does with it: its code in the
    reason, the tags and the markdown (a parity failure has no metric value: NaN)."""
    word = "promoted" if code == "promoted" else "not promoted"
    reason = f"{word}: {code}, {metric} {value:.4f} vs {incumbent} {incumbent_value}"
    tags = ({"parity.max_abs_difference": "0.001"} if code == "parity-failed" else
            {"gate.code": code, "gate.delta": repr(value - (incumbent_value or 0.0))})
    return Verdict(code, reason, value, incumbent, incumbent_value,
                   f"# {code}\n\n{reason}\n", tags)
