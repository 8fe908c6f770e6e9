"""Promotion on merit: each run's classifier becomes a version of the registered model; alias
`challenger` moves to it once it serves what evaluate computed, and alias `champion` only when the
gate (tasks/gate.py) finds it significantly better than the champion on the same evaluation set.
The decision and its numbers are recorded on the version: tags, description, and the run's
promotion/decision.md.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST,
                                          ErrorCode)

from tasks.config import RegistryConfig
from tasks.mlflow_store import CLASSIFIER, filled, using_tracking_uri
from tasks.records import ModelVersion

CHALLENGER, CHAMPION = "challenger", "champion"
DECISION_TAG = "promotion_decision"
REASON_TAG = "promotion_reason"  # the decision in one line (the description becomes the card)
DECISION_ARTIFACT = "promotion/decision.md"
VERSION_FILE = "version.json"  # in the logged model: the served model answers "<name>/<version>"
LAST_TAG = "bertflow.last"  # registered-model tags: the last run's outcome, whatever it was


@dataclass(frozen=True)
class Verdict:
    """What the gate decided about a new version, with the numbers to record."""

    code: str  # promoted, not-better, not-significant, collapsed, parity-failed
    reason: str  # one line, the version's description
    value: float  # the challenger's promote metric on the evaluation set
    incumbent: str  # "champion v3", "majority-class predictor", ...
    incumbent_value: float | None
    markdown: str
    tags: dict[str, str] = field(default_factory=dict)  # gate.*, parity.*, lineage

    @property
    def promoted(self) -> bool:
        return self.code == "promoted"

    @property
    def moves_challenger(self) -> bool:
        """A version that fails serving parity gets no alias at all."""
        return self.code != "parity-failed"


def _classifier_model_id(client, run_id: str) -> str:
    """The id of the run's logged `classifier` model (MLflow 3 logs models as LoggedModels)."""
    for output in client.get_run(run_id).outputs.model_outputs:
        if client.get_logged_model(output.model_id).name == CLASSIFIER:
            return output.model_id
    raise MlflowException(f"run {run_id} has no logged model named {CLASSIFIER!r}",
                          error_code=RESOURCE_DOES_NOT_EXIST)


def _version_of_run(client, name: str, run_id: str):
    """The version registered from `run_id` by an earlier attempt, or a new one."""
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        return existing[0]
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    model_id = _classifier_model_id(client, run_id)
    with using_tracking_uri(client.tracking_uri):  # the SQL registry resolves models:/ through it
        return client.create_model_version(name, f"models:/{model_id}", run_id=run_id,
                                           model_id=model_id)


def write_version_file(client, version) -> None:
    """{"name", "version"} into the version's logged model, beside its MLmodel file, where the
    served model reads whom it answers for (tasks/pyfunc_model.py)."""
    model_id = version.model_id or _classifier_model_id(client, version.run_id)
    with tempfile.TemporaryDirectory(prefix="bertflow-version-") as tmp:
        path = Path(tmp) / VERSION_FILE
        path.write_text(json.dumps({"name": version.name, "version": str(version.version)}))
        client.log_model_artifact(model_id, str(path))


def _record(client, name: str, version: str, run_id: str, metric: str,
            verdict: Verdict) -> None:
    """Decision tags, description and the run's promotion/decision.md first, the
    promotion_decision tag last: its presence means the whole decision is on the version."""
    tags = {**verdict.tags, "promote_metric": metric, "value": repr(verdict.value),
            "compared_with": verdict.incumbent, REASON_TAG: verdict.reason[:5000],
            "champion_value": "none" if verdict.incumbent_value is None
            else repr(verdict.incumbent_value)}
    for key, tag_value in tags.items():
        client.set_model_version_tag(name, version, key, tag_value)
    client.update_model_version(name, version, description=verdict.reason)
    client.log_text(run_id, verdict.markdown, DECISION_ARTIFACT)
    client.set_model_version_tag(name, version, DECISION_TAG, verdict.code)


def record_outcome(client, name: str, outcome: dict[str, str]) -> None:
    """The last run's outcome on the registered model (bertflow.last.code, .reason, .drop ...),
    whether or not it made a version: a blocked drop shows in the registry too."""
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    for key, value in outcome.items():
        client.set_registered_model_tag(name, f"{LAST_TAG}.{key}", str(value)[:5000])


def register_and_promote(client, run_id: str, cfg: RegistryConfig,
                         judge: Callable[[str], Verdict]) -> ModelVersion:
    """Register the run's classifier as a new version; `judge(version)` decides (once: a retry
    for the same run finds the recorded decision); then the aliases move as it says."""
    name, metric = filled(cfg).model_name, cfg.promote_metric
    version = _version_of_run(client, name, run_id)
    write_version_file(client, version)  # again on a retry: the first attempt may have died here
    number = str(version.version)  # the SQL store gives ints, the REST store strings
    if DECISION_TAG not in version.tags:
        _record(client, name, number, run_id, metric, judge(number))
    version = client.get_model_version(name, number)
    code = version.tags[DECISION_TAG]
    if code != "parity-failed":
        client.set_registered_model_alias(name, CHALLENGER, number)
    if code == "promoted":
        client.set_registered_model_alias(name, CHAMPION, number)
    reason = version.tags.get(REASON_TAG, version.description)  # the card replaces the latter
    record_outcome(client, name, {"code": code, "reason": reason,
                                  "version": number, "run_id": run_id,
                                  "drop": version.tags.get("drop", "")})
    aliases = client.get_model_version(name, number).aliases
    champion_value = version.tags["champion_value"]
    return ModelVersion(name=name, version=number, run_id=run_id,
                        tracking_uri=client.tracking_uri, aliases=tuple(sorted(aliases)),
                        promoted=code == "promoted", decision=reason, metric=metric,
                        value=float(version.tags["value"]), code=code,
                        champion_value=None if champion_value == "none" else float(champion_value))
