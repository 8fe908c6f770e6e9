"""The served model: raw text in; the label name and every class's probability out, or a score.

An MLflow "model from code": `tasks/register.py` logs this file itself, and MLflow executes it
at load time, where `bert_core` comes from the model's own `code/` folder. So it imports only
mlflow, keras, numpy, pandas and bert_core (never prefect, never `tasks`).

    text_a              text_b (pairs)          label         probability_<label>...  model_version
    "a man is playing"  "a man plays a guitar" -> "entailment"  0.91  0.06  0.03      bertflow-rte/3

A classifier answers `label` and `probability_<label>` for every class in label order; a binary
one also `probability`, that of its second (positive) class, as MRPC's served model always has.
A regression model (STS-B) answers `score`. Every row also carries `model_version`, the registered
"<name>/<version>" that answered it. `sentence1` and `sentence2`, the columns MRPC's served model
took first, are read as text_a and text_b.

Artifacts: `keras_model` (model.keras: logits, or scores for regression), `vocab` (vocab.txt) and
`model_config` (JSON: max_seq_length, do_lower_case, labels (names in logit order, [] for
regression), regression, pair; optional: temperature (probabilities are softmax(logits /
temperature)), threshold (binary: the second class wins at or above it; null: the likelier class
wins), max_batch_rows, memo_words, runtime), and with runtime "onnx" `onnx_model` (model.onnx).
`version.json` ({"name", "version"}) at the model's root is written when the model is
registered; a model without one answers "unregistered".

A batch is tokenized once, then run in length-sorted slices padded to their own longest row
(bert_core.predict): a pair of 20 tokens costs a 24-wide pass, not a 128-wide one.

Runtime (model_config "runtime", "keras" when absent): "keras" runs `keras_model`; "onnx" runs
`onnx_model` (bert_core/onnx_export.py's graph of the same weights) in ONNX Runtime, and loads
the Keras model only if `model` is asked for.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from bert_core.features import encode_pairs
from bert_core.model import softmax  # also registers BertClassifier for load_model
from bert_core.predict import predict_logits
from bert_core.tokenization import MEMO_WORDS, FullTokenizer

BATCH_SIZE = 64
MAX_BATCH_ROWS = 1024  # RegistryConfig.max_batch_rows's default, for models logged before it
UNREGISTERED = "unregistered"
OLD_NAMES = {"text_a": "sentence1", "text_b": "sentence2"}  # MRPC's columns before other tasks


def bad_input(message: str) -> MlflowException:
    """The error a request the model cannot answer gets (HTTP 400 behind `mlflow models serve`)."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _is_null(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def texts(frame: pd.DataFrame, column: str) -> list[str] | None:
    """`column` (or its old MRPC name) as a list of strings; None if neither is there. A missing
    or non-string value is refused, naming its row and column.

    >>> texts(pd.DataFrame({"sentence1": ["a cat", "a dog"]}), "text_a")
    ['a cat', 'a dog']
    >>> texts(pd.DataFrame({"text_a": ["a cat", None]}), "text_a")
    Traceback (most recent call last):
    ...
    mlflow.exceptions.MlflowException: row 1: text_a is null, not a string
    """
    for name in (column, OLD_NAMES[column]):
        if name in frame.columns:
            values = frame[name].tolist()
            for row, value in enumerate(values):
                if not isinstance(value, str):
                    what = "null" if _is_null(value) else f"{value} ({type(value).__name__})"
                    raise bad_input(f"row {row}: {name} is {what}, not a string")
            return values
    return None


def read_texts(frame: pd.DataFrame, pair: bool, max_rows: int
               ) -> tuple[list[str], list[str] | None]:
    """text_a and (for a pair model, when sent) text_b of a request, or the reason it is refused.

    >>> read_texts(pd.DataFrame({"text_a": ["a", "b", "c"]}), pair=False, max_rows=2)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mlflow.exceptions.MlflowException: 3 rows in one request, more than max_batch_rows 2: ...
    """
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    first = texts(frame, "text_a")
    if first is None:
        raise bad_input(f"no text_a column in the input (columns: "
                        f"{', '.join(map(str, frame.columns)) or 'none'})")
    if not first:
        raise bad_input("empty batch: send at least one row")
    if len(first) > max_rows:
        raise bad_input(f"{len(first)} rows in one request, more than max_batch_rows "
                        f"{max_rows}: send them in smaller batches")
    return first, texts(frame, "text_b") if pair else None


def answers(outputs: np.ndarray, labels: list[str], temperature: float = 1.0,
            threshold: float | None = None, version: str | None = None) -> pd.DataFrame:
    """The served frame from the model's outputs: (n, 1) scores when `labels` is empty, else
    (n, len(labels)) logits, turned into softmax(logits / temperature). A binary model with a
    `threshold` answers its second label where that label's probability reaches it. With a
    `version`, every row names it in `model_version`.

    >>> answers(np.array([[0.0, np.log(3.0)]]), ["0", "1"]).round(2).to_dict("records")
    [{'label': '1', 'probability_0': 0.25, 'probability_1': 0.75, 'probability': 0.75}]
    >>> answers(np.array([[0.0, np.log(3.0)]]), ["0", "1"], 2.0, 0.7).round(2).to_dict("records")
    [{'label': '0', 'probability_0': 0.37, 'probability_1': 0.63, 'probability': 0.63}]
    >>> answers(np.array([[3.5]]), [], version="bertflow-stsb/2").to_dict("records")
    [{'score': 3.5, 'model_version': 'bertflow-stsb/2'}]
    """
    outputs = np.asarray(outputs, np.float64)
    if not labels:
        columns = {"score": outputs[:, 0]}
    else:
        probabilities = softmax(outputs / temperature)  # (n, num_labels)
        binary = len(labels) == 2
        chosen = ((probabilities[:, 1] >= threshold).astype(int)
                  if binary and threshold is not None else probabilities.argmax(axis=1))
        columns = {"label": np.asarray(labels, dtype=object)[chosen],
                   **{f"probability_{name}": probabilities[:, i]
                      for i, name in enumerate(labels)},
                   **({"probability": probabilities[:, 1]} if binary else {})}
    if version is not None:
        columns["model_version"] = np.full(len(outputs), version, dtype=object)
    return pd.DataFrame(columns)  # in one go: adding columns one by one cost 1 ms a request


def cpu_cores() -> int:
    """The cores this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class OnnxLogits:
    """An ONNX Runtime session with a Keras model's `predict_on_batch`: features -> logits."""

    def __init__(self, path: str) -> None:
        import onnxruntime  # only the onnx runtime needs it

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = cpu_cores()
        self.session = onnxruntime.InferenceSession(path, options,
                                                    providers=["CPUExecutionProvider"])

    def predict_on_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: np.asarray(values, np.int32) for name, values in batch.items()}
        return self.session.run(["logits"], feed)[0]


def registered_as(model_dir: Path) -> str:
    """"<name>/<version>" from the model's version.json, "unregistered" without one."""
    path = model_dir / "version.json"
    if not path.is_file():
        return UNREGISTERED
    version = json.loads(path.read_text(encoding="utf-8"))
    return f"{version['name']}/{version['version']}"


class TextModel(mlflow.pyfunc.PythonModel):
    """Tokenizes and packs each example as run_classifier does, then runs the fine-tuned BERT."""

    def load_context(self, context) -> None:
        config_file = Path(context.artifacts["model_config"])
        config = json.loads(config_file.read_text(encoding="utf-8"))
        self.max_seq_length = int(config["max_seq_length"])
        self.labels = [] if config["regression"] else [str(x) for x in config["labels"]]
        self.pair = bool(config["pair"])
        self.temperature = float(config.get("temperature") or 1.0)
        self.threshold = None if config.get("threshold") is None else float(config["threshold"])
        self.max_batch_rows = int(config.get("max_batch_rows") or MAX_BATCH_ROWS)
        self.tokenizer = FullTokenizer(context.artifacts["vocab"],
                                       do_lower_case=bool(config["do_lower_case"]),
                                       memo_words=int(config.get("memo_words", MEMO_WORDS)))
        self.runtime = config.get("runtime", "keras")
        self._keras_file, self._model = context.artifacts["keras_model"], None
        self._runner = (OnnxLogits(context.artifacts["onnx_model"]) if self.runtime == "onnx"
                        else self.model)
        self.model_version = registered_as(config_file.parent.parent)  # artifacts/ is in it
        self._running = threading.Lock()  # the server answers requests on a pool of threads

    @property
    def model(self) -> keras.Model:
        """The Keras BertClassifier (loaded on first use under the onnx runtime)."""
        if self._model is None:
            self._model = keras.saving.load_model(self._keras_file, compile=False)
        return self._model

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        first, second = read_texts(model_input, self.pair, self.max_batch_rows)
        features = encode_pairs(self.tokenizer, first, second, self.max_seq_length)
        with self._running:  # one batch at a time: each already uses every core
            outputs = predict_logits(self._runner, features, BATCH_SIZE)
        return answers(outputs, self.labels, self.temperature, self.threshold,
                       self.model_version)


mlflow.models.set_model(TextModel())
