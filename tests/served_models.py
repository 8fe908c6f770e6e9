"""Tiny trained models of any task, in the folder layout the train stage writes, and evaluation
reports for them: what the register stage and `bertflow predict` are tested on.

    trained = write_trained(tmp / "model", "mnli", ("contradiction", "entailment", "neutral"))
    report = write_report(tmp / "report", {"accuracy": 0.7}, splits={"dev_mismatched": {...}})
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras

from bert_core.config import BertConfig
from bert_core.model import BertBackbone, BertClassifier
from data_contracts.specs import TaskConfig, task_spec
from tasks.records import EvalReport, TrainedModel
from tests.fixtures import tiny_vocab

MAX_SEQ = 16
HISTORY = {"steps": [1, 2, 3], "loss": [0.71, 0.64, 0.52], "learning_rate": [1e-5, 2e-5, 1e-5],
           "epochs": [{"epoch": 1, "step": 3, "loss": 0.62, "accuracy": 0.6}],
           "resumed_from_step": None, "examples_per_second": 120.0}


def write_trained(folder: Path, task: str, labels: tuple[str, ...], scale: float = 200.0,
                  seed: int = 0) -> TrainedModel:
    """A one-layer BERT over tiny_vocab with a logit per label (one output, the score, when
    `labels` is empty: regression), its head scaled by `scale` so that texts differ visibly."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in vocab))
    keras.utils.set_random_seed(seed)
    model = BertClassifier(BertBackbone(BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64)), num_labels=len(labels) or 1)
    kernel, bias = model.get_layer("logits").get_weights()
    model.get_layer("logits").set_weights([kernel * scale, bias])
    model.save(folder / "model.keras")
    (folder / "history.json").write_text(json.dumps(HISTORY))
    digest = hashlib.sha256((folder / "model.keras").read_bytes()).hexdigest()
    return TrainedModel(model_dir=str(folder), model_sha256=digest, steps=3, seconds=1.5,
                        init="scratch", max_seq_length=MAX_SEQ, do_lower_case=True,
                        labels=labels, task=task, pair=task_spec(TaskConfig(name=task)).pair)


def write_report(folder: Path, metrics: dict[str, float], collapsed: bool = False,
                 splits: dict[str, dict[str, float]] | None = None) -> EvalReport:
    """An evaluation report folder with `metrics` as dev's (and `splits` as other splits')."""
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "dev_predictions.tsv").write_text("index\tlabel\tprobability\n0\t1\t0.9\n")
    (folder / "summary.md").write_text(f"# dev {metrics}\n")
    return EvalReport(report_dir=str(folder), metrics=metrics, confusion_matrix=[],
                      collapsed=collapsed, splits=splits or {},
                      collapse_reason="predicts 1 for 100% of dev" if collapsed else None)
