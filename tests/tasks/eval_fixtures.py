"""What the evaluate stage's tests share: ten hand-checked MRPC dev predictions, a training
history, a check that a PNG is a real picture; and the stage's inputs as the stages before it
leave them: shards written to the manifest contract (tasks/tokenize.py writes the same) for any
task shape, and a tiny random model saved as the train stage saves it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.image import imread

from bert_core.features import encode_pairs
from bert_core.tokenization import FullTokenizer
from tasks.atomic import write_json
from tasks.fingerprint import sha256_file
from tasks.records import Shards, TrainedModel
from tests.fixtures import WORDS, tiny_vocab

# Ten dev examples: 6 positives, 4 negatives. At 0.5: TP 4, FN 2, FP 1, TN 3.
LABELS = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
P_POSITIVE = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.55, 0.2, 0.1, 0.35])
PROBS = np.stack([1 - P_POSITIVE, P_POSITIVE], axis=1)
MRPC = ("0", "1")
NLI = ("contradiction", "entailment", "neutral")
HISTORY = {"steps": [1, 2, 3, 4], "loss": [0.71, 0.69, 0.66, 0.62],
           "learning_rate": [1e-5, 2e-5, 1e-5, 0.0],
           "epochs": [{"epoch": 1, "step": 2, "loss": 0.70, "accuracy": 0.5},
                      {"epoch": 2, "step": 4, "loss": 0.64, "accuracy": 0.6}],
           "resumed_from_step": None, "examples_per_second": 55.0}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STANDARD = {"train": ("train", 12), "dev": ("eval", 13), "test": ("test", 8)}


def assert_real_png(path: Path) -> np.ndarray:
    """A PNG of more than 200 x 200 pixels with something drawn on it; its pixels."""
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    assert path.stat().st_size > 5_000, path
    pixels = imread(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200 and pixels.std() > 0.05, path
    return pixels


def _pairs(rng: random.Random, rows: int) -> tuple[list[str], list[str]]:
    def sentence():
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))) + " ."
    return [sentence() for _ in range(rows)], [sentence() for _ in range(rows)]


def write_contract_shards(folder: Path, task: str, labels: tuple[str, ...],
                          splits: dict[str, tuple[str, int]], positive: str | None = None,
                          submission: dict[str, str] | None = None, seed: int = 0) -> Shards:
    """Parquet shards (4 rows each) and manifest.json as the tokenize stage writes them, of
    random pairs over the tiny vocab: `splits` is {name: (role, rows)}; label ids drawn at
    random (int32), or with no `labels` scores in [0, 5] (float32); test splits unlabeled."""
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n")
    tokenizer = FullTokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    rng, entries = random.Random(seed), {}
    for split, (role, rows) in splits.items():
        features = encode_pairs(tokenizer, *_pairs(rng, rows), 32)
        label = None
        if role != "test":
            label = (pa.array([rng.randrange(len(labels)) for _ in range(rows)], pa.int32())
                     if labels else pa.array([rng.uniform(0, 5) for _ in range(rows)],
                                             pa.float32()))
        shards = []
        for start in range(0, rows, 4):
            part = slice(start, start + 4)
            n = len(range(rows)[part])
            name = f"{split}-{start // 4:05d}.parquet"
            pq.write_table(pa.table({
                **{column: pa.array(values[part].tolist(), pa.list_(pa.int32()))
                   for column, values in features.as_dict().items()},
                "label": label[start:start + 4] if label is not None else pa.nulls(n, pa.int32()),
                "guid": pa.array([f"{split}-{i}" for i in range(start + 1, start + n + 1)]),
                "is_real_example": pa.array(np.ones(n, np.int32))}), folder / name)
            shards.append({"parquet": name, "rows": n})
        entries[split] = {"rows": rows, "labeled": role != "test", "role": role,
                          "shards": shards}
    write_json(folder / "manifest.json", {
        "task": task, "labels": list(labels), "regression": not labels, "pair": True,
        "positive": positive, "metric": "accuracy" if labels else "pearson",
        "submission": submission or {}, "max_seq_length": 32, "splits": entries})
    return Shards(shard_dir=str(folder), manifest_sha256=sha256_file(folder / "manifest.json"),
                  rows={s: e["rows"] for s, e in entries.items()})


def tiny_model(folder: Path, labels: tuple[str, ...], seed: int = 0,
               outputs: int | None = None, spread: float = 1.0) -> TrainedModel:
    """A random 1-layer classifier (one output unit with no `labels`) saved beside a
    history.json, as the train stage leaves them; `spread` scales its output layer's weights
    (a random regressor's scores differ in the fifth decimal)."""
    import keras

    from bert_core.config import BertConfig
    from bert_core.model import BertBackbone, BertClassifier

    keras.utils.set_random_seed(seed)
    model = BertClassifier(BertBackbone(BertConfig(
        vocab_size=len(tiny_vocab()), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64)), num_labels=outputs or len(labels) or 1)
    kernel = model.get_layer("logits").kernel
    kernel.assign(kernel * spread)
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    (folder / "history.json").write_text(json.dumps(HISTORY))
    return TrainedModel(model_dir=str(folder), model_sha256=sha256_file(folder / "model.keras"),
                        steps=4, seconds=1.0, init="scratch", max_seq_length=32,
                        do_lower_case=True, labels=labels)


def write_cola(root: Path) -> tuple[TrainedModel, Shards]:
    """A CoLA-shaped task (labels "0", "1", positive "1", 13 dev pairs) and a model for it."""
    shards = write_contract_shards(root / "shards", "cola", ("0", "1"), STANDARD, positive="1",
                                   submission={"test": "CoLA.tsv"})
    return tiny_model(root / "model", ("0", "1")), shards
