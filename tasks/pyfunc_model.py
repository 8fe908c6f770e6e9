"""The served model: raw text in; the label name and every class's probability out, or a score.

An MLflow "model from code": `tasks/register.py` logs this file itself, and MLflow executes it
at load time, where `bert_core` comes from the model's own `code/` folder. So it imports only
mlflow, keras, numpy, pandas and bert_core (never prefect, never `tasks`).

    text_a                  text_b (pair tasks)       label          probability_<label>, ...
    "a man is playing"      "a man plays a guitar" -> "entailment"   0.91  0.06  0.03

A classifier answers `label` (the likeliest class's name) and `probability_<label>` for every
class in label order; a binary one also `probability`, that of its second (positive) class, as
MRPC's served model always has. A regression model (STS-B) answers `score`. `sentence1` and
`sentence2`, the columns MRPC's served model took first, are read as text_a and text_b.

Artifacts: `keras_model` (model.keras: logits, or scores for regression), `vocab` (vocab.txt) and
`model_config` (JSON: max_seq_length, do_lower_case, labels (names in logit order, [] for
regression), regression, pair).
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd

from bert_core.features import encode_pairs
from bert_core.model import softmax  # also registers BertClassifier for load_model
from bert_core.tokenization import FullTokenizer

BATCH_SIZE = 64
OLD_NAMES = {"text_a": "sentence1", "text_b": "sentence2"}  # MRPC's columns before other tasks


def texts(frame: pd.DataFrame, column: str) -> list[str] | None:
    """`column` (or its old MRPC name) as strings, missing values as ""; None if neither is there.

    >>> texts(pd.DataFrame({"sentence1": ["a cat", None]}), "text_a")
    ['a cat', '']
    """
    for name in (column, OLD_NAMES[column]):
        if name in frame.columns:
            return frame[name].fillna("").astype(str).tolist()
    return None


def answers(outputs: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """The served frame from the model's outputs: (n, 1) scores when `labels` is empty, else
    (n, len(labels)) logits.

    >>> answers(np.array([[0.0, np.log(3.0)]]), ["0", "1"]).round(2).to_dict("records")
    [{'label': '1', 'probability_0': 0.25, 'probability_1': 0.75, 'probability': 0.75}]
    >>> answers(np.array([[3.5]]), []).to_dict("records")
    [{'score': 3.5}]
    """
    if not labels:
        return pd.DataFrame({"score": np.asarray(outputs, np.float64)[:, 0]})
    probabilities = softmax(outputs)  # (n, num_labels)
    names = np.asarray(labels, dtype=object)
    frame = pd.DataFrame({"label": names[probabilities.argmax(axis=1)]})
    for i, label in enumerate(labels):
        frame[f"probability_{label}"] = probabilities[:, i]
    if len(labels) == 2:
        frame["probability"] = probabilities[:, 1]
    return frame


class TextModel(mlflow.pyfunc.PythonModel):
    """Tokenizes and packs each example as run_classifier does, then runs the fine-tuned BERT."""

    def load_context(self, context) -> None:
        config = json.loads(Path(context.artifacts["model_config"]).read_text(encoding="utf-8"))
        self.max_seq_length = int(config["max_seq_length"])
        self.labels = [] if config["regression"] else [str(x) for x in config["labels"]]
        self.pair = bool(config["pair"])
        self.tokenizer = FullTokenizer(context.artifacts["vocab"],
                                       do_lower_case=bool(config["do_lower_case"]))
        self.model = keras.saving.load_model(context.artifacts["keras_model"], compile=False)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        first = texts(model_input, "text_a")
        if first is None:
            raise ValueError(f"no text_a column in the input (columns: "
                             f"{', '.join(map(str, model_input.columns)) or 'none'})")
        second = texts(model_input, "text_b") if self.pair else None
        outputs = [self._outputs(first[i:i + BATCH_SIZE],
                                 None if second is None else second[i:i + BATCH_SIZE])
                   for i in range(0, len(first), BATCH_SIZE)]
        width = len(self.labels) or 1
        return answers(np.concatenate(outputs) if outputs else np.zeros((0, width)), self.labels)

    def _outputs(self, first: list[str], second: list[str] | None) -> np.ndarray:
        features = encode_pairs(self.tokenizer, first, second, self.max_seq_length)
        outputs = self.model(features.as_dict(), training=False)  # (batch, num_labels or 1)
        return np.asarray(keras.ops.convert_to_numpy(outputs), np.float64)


mlflow.models.set_model(TextModel())
