"""The served classifier: raw sentence pairs in, paraphrase probabilities out.

An MLflow "model from code": `tasks/register.py` logs this file itself, and MLflow executes it
at load time, where `bert_core` comes from the model's own `code/` folder. So it imports only
mlflow, keras, numpy, pandas and bert_core (never prefect, never `tasks`).

    sentence1                     sentence2                       probability
    "the company said its ..."    "shares rose on monday ..."  ->  0.87

Artifacts: `keras_model` (model.keras, logits out), `vocab` (vocab.txt) and `model_config` (JSON
with max_seq_length, do_lower_case, labels).
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd

from bert_core.features import PARAPHRASE, encode_pairs
from bert_core.model import softmax  # also registers BertClassifier for load_model
from bert_core.tokenization import FullTokenizer

BATCH_SIZE = 64
class PairClassifier(mlflow.pyfunc.PythonModel):
    """Tokenizes and packs each pair as run_classifier does, then runs the fine-tuned BERT."""

    def load_context(self, context) -> None:
        config = json.loads(Path(context.artifacts["model_config"]).read_text(encoding="utf-8"))
        self.max_seq_length = int(config["max_seq_length"])
        self.tokenizer = FullTokenizer(context.artifacts["vocab"],
                                       do_lower_case=bool(config["do_lower_case"]))
        self.model = keras.saving.load_model(context.artifacts["keras_model"], compile=False)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        first = model_input["sentence1"].fillna("").astype(str).tolist()
        second = model_input["sentence2"].fillna("").astype(str).tolist()
        probabilities = [self._probabilities(first[i:i + BATCH_SIZE], second[i:i + BATCH_SIZE])
                         for i in range(0, len(first), BATCH_SIZE)]
        column = np.concatenate(probabilities) if probabilities else np.zeros(0)
        return pd.DataFrame({"probability": column})

    def _probabilities(self, first: list[str], second: list[str]) -> np.ndarray:
        features = encode_pairs(self.tokenizer, first, second, self.max_seq_length)
        logits = self.model(features.as_dict(), training=False)  # (batch, num_labels)
        return softmax(logits)[:, PARAPHRASE]


mlflow.models.set_model(PairClassifier())
