"""The incumbent a new model must beat: the registered champion, re-scored on this run's own
evaluation set (never an old metric from its run), or, with no champion yet, the constant
predictor of the training data.

    find_champion        the champion's version, model and lineage tags (data.digest, drop ...)
    evaluation_examples  the primary evaluation split's raw examples -> home/eval/<sha>.parquet
    score_champion       the champion's served outputs on them -> home/scores/<model>-<sha>.parquet,
                         cached by the champion's model and the evaluation set's content
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from prefect import task
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict

from data_contracts.specs import TaskConfig, task_spec
from tasks.caching import cached
from tasks.config import RegistryConfig
from tasks.fingerprint import sha256_file, stamp
from tasks.mlflow_store import TransientRegistryError, open_store, tracking_uri, \
    transient_errors, using_tracking_uri
from tasks.promotion import CHAMPION, record_outcome
from tasks.records import TaskData, _Record
from tasks.retry import retry_on

PRIMARY_EVAL = "dev"  # the evaluation split that promotes (MNLI: dev_matched is read as dev)
PROFILE_ARTIFACT = "data/profile.json"


class Incumbent(BaseModel):
    """The champion version as the registry holds it."""

    model_config = ConfigDict(frozen=True)
    name: str
    version: str
    run_id: str
    model_id: str  # the logged model's id: what its served outputs are cached by
    tracking_uri: str
    tags: dict[str, str]  # the version's: data.digest, training.key, drop, promotion tags

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def label(self) -> str:
        return f"champion v{self.version}"


class Examples(_Record):
    """The primary evaluation split's raw examples (guid, text_a, text_b, label) in a Parquet
    file named by their content."""

    path: str
    sha256: str
    rows: int


class Scores(_Record):
    """A model's served outputs on an evaluation set: guid, p_<label>... (or score)."""

    path: str
    model_uri: str


def current_champion(client, name: str) -> Incumbent | None:
    try:
        number = client.get_registered_model(name).aliases.get(CHAMPION)
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    if number is None:
        return None
    version = client.get_model_version(name, str(number))
    return Incumbent(name=name, version=str(version.version), run_id=version.run_id or "",
                     model_id=version.model_id or version.source, tracking_uri=client.tracking_uri,
                     tags=dict(version.tags))


@task(name="champion", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=1),
      retry_condition_fn=retry_on(TransientRegistryError))
def find_champion(cfg: RegistryConfig, home: str) -> Incumbent | None:
    """The champion of cfg.model_name now (None before the first one is promoted)."""
    with transient_errors(tracking_uri(cfg, Path(home))):
        return current_champion(open_store(cfg, Path(home))[0], cfg.model_name)


@task(name="note-outcome", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=1),
      retry_condition_fn=retry_on(TransientRegistryError))
def note_outcome(cfg: RegistryConfig, home: str, outcome: dict[str, str]) -> None:
    """A run's outcome that made no version (a no-op) on the registered model's
    bertflow.last.* tags, where the registry shows every week's outcome."""
    with transient_errors(tracking_uri(cfg, Path(home))):
        record_outcome(open_store(cfg, Path(home))[0], cfg.model_name, outcome)


def champion_profile(incumbent: Incumbent) -> dict | None:
    """The data profile stored with the champion's run (None for a version from before them)."""
    client = mlflow.MlflowClient(incumbent.tracking_uri, registry_uri=incumbent.tracking_uri)
    try:
        path = client.download_artifacts(incumbent.run_id, PROFILE_ARTIFACT)
    except (MlflowException, OSError):
        return None
    return json.loads(Path(path).read_text())


@task(name="evaluation-set", **cached("evaluation-set", __name__))
def evaluation_examples(raw: TaskData, task_cfg: TaskConfig, home: str) -> Examples:
    """The raw examples every version is scored on: the primary evaluation split's."""
    frame = task_spec(task_cfg).read_split(Path(raw.data_dir), PRIMARY_EVAL)
    frame = frame[["guid", "text_a", "text_b", "label"]].reset_index(drop=True)
    out = Path(home) / "eval" / f"{raw.sha256[task_spec(task_cfg).split(PRIMARY_EVAL).file]}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(out)
    return Examples(path=str(out), sha256=sha256_file(out), rows=len(frame), files=(stamp(out),))


def served_outputs(model, frame: pd.DataFrame, labels: tuple[str, ...]) -> np.ndarray:
    """What a served classifier answers for the examples: class probabilities (n, k) in the order
    of `labels`, or scores (n,) for a regression model."""
    from tasks.serving import served_inputs

    names = served_inputs(model)
    texts = frame[["text_a", "text_b"][:len(names)]].astype(object)
    texts.columns = list(names)
    answer = model.predict(texts.where(texts.notna(), None))
    if not labels:
        return answer["score"].to_numpy(np.float64)
    if f"probability_{labels[0]}" not in answer.columns:  # an MRPC model from before label names
        p = answer["probability"].to_numpy(np.float64)
        return np.stack([1 - p, p], axis=1)
    return answer[[f"probability_{label}" for label in labels]].to_numpy(np.float64)


def scores_key(inputs: dict) -> str:
    return f"{inputs['incumbent'].model_id} {inputs['examples'].sha256}"


@task(name="score-champion", retries=2, retry_condition_fn=retry_on(TransientRegistryError),
      **cached("score-champion", __name__, ("mlflow",), ignore={"incumbent": ("tags",)},
               extra_key=scores_key))
def score_champion(incumbent: Incumbent, examples: Examples, labels: tuple[str, ...],
                   home: str) -> Scores:
    """The champion's served outputs on the evaluation set (a Parquet file: guid, then one column
    per class probability, or `score`), computed once per champion and evaluation set."""
    key = hashlib.sha256(scores_key({"incumbent": incumbent, "examples": examples}).encode())
    out = Path(home) / "scores" / f"{key.hexdigest()[:24]}.parquet"
    frame = pd.read_parquet(examples.path)
    with transient_errors(incumbent.tracking_uri), using_tracking_uri(incumbent.tracking_uri):
        model = mlflow.pyfunc.load_model(incumbent.model_uri)
    outputs = served_outputs(model, frame, labels)
    scored = pd.DataFrame(outputs.reshape(len(frame), -1),
                          columns=[f"p_{label}" for label in labels] or ["score"])
    scored.insert(0, "guid", frame["guid"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    scored.to_parquet(tmp, index=False)
    tmp.replace(out)
    return Scores(path=str(out), model_uri=incumbent.model_uri, files=(stamp(out),))
