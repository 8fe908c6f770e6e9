"""Serving the registered classifier: load it (a URI, or a task's champion) and ask it.

    model = load_model(None, home, for_task_name(RegistryConfig(), "rte"))
    predict_texts(model, [("A man is eating.", "Someone eats.")])   # label, probability
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from data_contracts.specs import default_metric
from tasks.config import RegistryConfig
from tasks.mlflow_store import sqlite_file, tracking_uri, using_tracking_uri
from tasks.promotion import CHAMPION
from tasks.register import OLD_MRPC_INPUTS

def for_task_name(cfg: RegistryConfig, task: str) -> RegistryConfig:
    """`cfg` with the task's defaults where it leaves them open (its model: bertflow-<task>).

    >>> for_task_name(RegistryConfig(), "rte").model_name
    'bertflow-rte'
    """
    return cfg.defaults(task, default_metric(task))


def load_model(model_uri: str | None, home: Path, cfg: RegistryConfig, task: str | None = None):
    """The served classifier (`mlflow.pyfunc.PyFuncModel`): `model_uri`, or the champion of
    cfg.model_name (default: that of `task`) in the pipeline's store."""
    uri = tracking_uri(cfg, home)
    db = sqlite_file(uri)
    if model_uri is None and db and not db.is_file():
        raise FileNotFoundError(f"no MLflow store at {db}: run the pipeline first, "
                                "or give a model URI")
    if model_uri is None and cfg.model_name is None:
        if task is None:
            raise ValueError("which model? give a model URI, a task or cfg.model_name")
        cfg = for_task_name(cfg, task)
    with using_tracking_uri(uri):
        return mlflow.pyfunc.load_model(model_uri or f"models:/{cfg.model_name}@{CHAMPION}")


def served_inputs(model) -> tuple[str, ...]:
    """The text columns a served classifier reads: ("text_a",) or ("text_a", "text_b"); an MRPC
    model registered before other tasks reads ("sentence1", "sentence2")."""
    names = model.metadata.get_input_schema().input_names()
    if "text_a" not in names:
        return OLD_MRPC_INPUTS
    return ("text_a", "text_b") if "text_b" in names else ("text_a",)


def predict_texts(model, rows: list[tuple[str, ...]]) -> pd.DataFrame:
    """The answer for each row of texts (see `served_inputs`): columns `label` and `probability`
    (of that label) from a classifier, `score` from a regression model."""
    frame = model.predict(pd.DataFrame(rows, columns=list(served_inputs(model)), dtype=object))
    if "score" in frame.columns:
        return frame[["score"]]
    if "label" not in frame.columns:  # an MRPC model from before label names: P("1") only
        p = frame["probability"].to_numpy()
        return pd.DataFrame({"label": np.where(p >= 0.5, "1", "0"),
                             "probability": np.where(p >= 0.5, p, 1 - p)})
    chosen = [row[f"probability_{row['label']}"] for row in frame.to_dict("records")]
    return pd.DataFrame({"label": frame["label"].to_numpy(), "probability": chosen})


def predict_pairs(model, pairs: list[tuple[str, str]]) -> list[float]:
    """The paraphrase probability of each (sentence1, sentence2) pair (MRPC's model)."""
    if not pairs:
        return []
    frame = pd.DataFrame(pairs, columns=list(OLD_MRPC_INPUTS))
    return [float(p) for p in model.predict(frame)["probability"]]
