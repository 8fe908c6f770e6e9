"""Promotion on merit: each run's classifier becomes a version of the registered model with alias
`challenger`; alias `champion` moves to it only when it did not collapse and beats the champion's
dev_<promote metric> (higher is better, except for a loss or a mean squared error). The decision
is recorded on the version (tags and description).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST,
                                          ErrorCode)

from tasks.config import RegistryConfig
from tasks.mlflow_store import CLASSIFIER, filled, using_tracking_uri
from tasks.records import EvalReport, ModelVersion

CHALLENGER, CHAMPION = "challenger", "champion"
DECISION_TAG = "promotion_decision"


@dataclass(frozen=True)
class Decision:
    promoted: bool
    code: str  # promotion_decision tag: promoted, not-better, collapsed or no-champion-metric
    reason: str


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of `metric` is the better one: loss, mse and any *_mse.

    >>> [lower_is_better(m) for m in ("mse", "loss", "dev_mismatched_mse", "mcc", "pearson")]
    [True, True, True, False, False]
    """
    return metric in ("loss", "mse") or metric.endswith("_mse")


def decide(metric: str, value: float, collapsed: bool, champion_version: str | None,
           champion_value: float | None, collapse_reason: str | None = None) -> Decision:
    """Promote a version that did not collapse and strictly beats the champion (or has none).

    >>> decide("f1", 0.86, False, "2", 0.81).reason
    'promoted: f1 0.8600 > champion v2 0.8100'
    >>> decide("f1", 0.81, False, "2", 0.81).reason
    'not promoted: f1 0.8100 <= champion v2 0.8100'
    >>> decide("f1", 0.90, True, None, None, "predicts 1 for 100% of dev").reason
    'not promoted: collapsed (predicts 1 for 100% of dev)'
    >>> decide("mse", 0.42, False, "3", 0.50).reason
    'promoted: mse 0.4200 < champion v3 0.5000'
    >>> decide("mse", 0.50, False, "3", 0.42).reason
    'not promoted: mse 0.5000 >= champion v3 0.4200'
    """
    if collapsed:
        return Decision(False, "collapsed", f"not promoted: collapsed ({collapse_reason})")
    if champion_version is None:
        return Decision(True, "promoted", f"promoted: first version, {metric} {value:.4f}")
    if champion_value is None:
        return Decision(False, "no-champion-metric",
                        f"not promoted: champion v{champion_version} has no dev_{metric}")
    lower = lower_is_better(metric)
    better, worse = ("<", ">=") if lower else (">", "<=")
    beats = (value < champion_value) if lower else (value > champion_value)
    if beats:
        return Decision(True, "promoted", f"promoted: {metric} {value:.4f} {better} champion "
                                          f"v{champion_version} {champion_value:.4f}")
    return Decision(False, "not-better", f"not promoted: {metric} {value:.4f} {worse} champion "
                                         f"v{champion_version} {champion_value:.4f}")


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


def champion_of(client, name: str, metric: str) -> tuple[str | None, float | None]:
    """The champion's version and its run's dev_<metric> (None, None before the first one)."""
    # From the registered model's aliases: a missing alias raises INVALID_PARAMETER_VALUE.
    version = client.get_registered_model(name).aliases.get(CHAMPION)
    if version is None:
        return None, None
    version = str(version)  # the SQL store gives ints, the REST store strings
    run_id = client.get_model_version(name, version).run_id
    return version, client.get_run(run_id).data.metrics.get(f"dev_{metric}") if run_id else None


def _record(client, name: str, version: str, decision: Decision, metric: str, value: float,
            champion: tuple[str | None, float | None]) -> None:
    """Decision tags and description first, the promotion_decision tag last: its presence means
    the whole decision is on the version."""
    tags = {"promote_metric": metric, "value": repr(value),
            "champion_version": champion[0] or "none",
            "champion_value": "none" if champion[1] is None else repr(champion[1])}
    for key, tag_value in tags.items():
        client.set_model_version_tag(name, version, key, tag_value)
    client.update_model_version(name, version, description=decision.reason)
    client.set_model_version_tag(name, version, DECISION_TAG, decision.code)


def register_and_promote(client, run_id: str, report: EvalReport,
                         cfg: RegistryConfig) -> ModelVersion:
    """Register the run's classifier as a new version (alias `challenger`) and move `champion` to
    it when `decide` says so. Safe to call again for the same run: the recorded decision stands."""
    name, metric = filled(cfg).model_name, cfg.promote_metric
    version = _version_of_run(client, name, run_id)
    number = str(version.version)  # the SQL store gives ints, the REST store strings
    if DECISION_TAG not in version.tags:
        value = float(report.metrics.get(metric, float("nan")))
        champion = champion_of(client, name, metric)
        decision = decide(metric, value, report.collapsed, *champion, report.collapse_reason)
        _record(client, name, number, decision, metric, value, champion)
    version = client.get_model_version(name, number)
    client.set_registered_model_alias(name, CHALLENGER, number)
    promoted = version.tags[DECISION_TAG] == "promoted"
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, number)
    aliases = client.get_model_version(name, number).aliases
    champion_value = version.tags["champion_value"]
    return ModelVersion(name=name, version=number, run_id=run_id,
                        tracking_uri=client.tracking_uri, aliases=tuple(sorted(aliases)),
                        promoted=promoted,
                        decision=version.description, metric=metric,
                        value=float(version.tags["value"]),
                        champion_value=None if champion_value == "none" else float(champion_value))


def promotion_markdown(version: ModelVersion, metrics: dict[str, float],
                       champion_version: str | None, champion_metrics: dict[str, float]) -> str:
    """The decision and the dev metrics beside those of the champion it was compared with."""
    before = f"v{champion_version} (champion before)" if champion_version else "no champion before"
    rows = [f"| {k} | {v:.4g} | "
            + (f"{champion_metrics[f'dev_{k}']:.4g}" if f"dev_{k}" in champion_metrics else "-")
            + " |" for k, v in metrics.items()]
    return "\n".join([
        f"# {version.name} v{version.version}: {'promoted' if version.promoted else 'registered'}",
        "", version.decision, "",
        f"| dev metric | v{version.version} | {before} |", "|---|---|---|", *rows, "",
        f"Aliases now: {', '.join(version.aliases)}. MLflow run `{version.run_id}`."])


def compared_with(client, name: str, version: str) -> tuple[str | None, dict[str, float]]:
    champion = client.get_model_version(name, version).tags.get("champion_version", "none")
    if champion == "none":
        return None, {}
    return champion, client.get_run(client.get_model_version(name, champion).run_id).data.metrics
