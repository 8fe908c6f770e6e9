"""What `bertflow run` reports: each task's final state and seconds (read back from the Prefect
API), the dev metrics (from the MLflow run) and the model version with its promotion decision."""

from __future__ import annotations

import itertools
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.states import State

from flows.errors import explain, unexpected
from tasks.config import PipelineConfig
from tasks.records import ModelVersion


def _seconds(run) -> float:
    """Wall seconds of a flow or task run (a cached task never starts: its run time, ~0)."""
    if run.start_time and run.end_time:
        return (run.end_time - run.start_time).total_seconds()
    return run.total_run_time.total_seconds()


def task_states(flow_run_id) -> dict[str, dict]:
    """{"download": {"state": "Cached", "seconds": 0.02}, ...} in the order the tasks ran; a task
    that ran several times (a sweep's train) is listed as train, train#2, ..."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[flow_run_id])))
    out = {}
    for run in sorted(runs, key=lambda r: r.expected_start_time or r.created):
        name = base = run.name.rsplit("-", 1)[0]
        for n in itertools.count(2):
            if name not in out:
                break
            name = f"{base}#{n}"
        out[name] = {"state": run.state.name if run.state else None,
                     "seconds": round(_seconds(run), 3)}
    return out


def dev_metrics(version: ModelVersion, cfg: PipelineConfig) -> dict[str, float]:
    import mlflow

    from tasks.mlflow_store import tracking_uri

    run = mlflow.MlflowClient(tracking_uri(cfg.registry, Path(cfg.home))).get_run(version.run_id)
    return {k.removeprefix("dev_"): v for k, v in sorted(run.data.metrics.items())
            if k.startswith("dev_")}


def _model(version: ModelVersion) -> dict:
    return {"name": version.name, "version": version.version, "aliases": list(version.aliases),
            "promoted": version.promoted, "decision": version.decision, "run_id": version.run_id,
            "metric": version.metric, "code": version.code}


def _flow(state: State, cfg: PipelineConfig) -> dict:
    """Flow run id, its final state and every task's; the error when it failed, as a person
    reads it (flows/errors.py)."""
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        seconds = _seconds(client.read_flow_run(flow_run_id))
    summary = {"flow_run_id": str(flow_run_id), "state": state.name, "seconds": round(seconds, 3),
               "tasks": task_states(flow_run_id)}
    if not state.is_completed():
        summary["error"] = error_message(state.result(raise_on_failure=False), cfg)
    return summary


def error_message(err: BaseException, cfg: PipelineConfig) -> str:
    """The failure named in the user's terms (a file of the newest drop, with data.drops); an
    unexpected one with its type."""
    from tasks.drops import in_drop, newest_drop

    task, data = cfg.task, cfg.data
    if data.drops:
        try:
            task, data = in_drop(task, data, newest_drop(data.drops, data.timeout_s))
        except Exception:  # the drop location itself is what failed: named as it is
            pass
    return explain(err, data, cfg.home, task) or unexpected(err)


def summarize(state: State, cfg: PipelineConfig) -> dict:
    summary = _flow(state, cfg)
    if state.is_completed():
        version: ModelVersion = state.result()
        summary["dev_metrics"] = dev_metrics(version, cfg)
        summary["model"] = _model(version)
    return summary


def summarize_sweep(state: State, cfg: PipelineConfig) -> dict:
    summary = _flow(state, cfg)
    if state.is_completed():
        result = state.result()
        summary["settings"] = result.settings
        summary["best"] = {"learning_rate": result.best_learning_rate, "seed": result.best_seed}
        summary["dev_metrics"] = dev_metrics(result.version, cfg)
        summary["model"] = _model(result.version)
        summary["parent_run_id"] = result.parent_run_id
    return summary


SHOWN = ("accuracy", "f1", "precision", "recall", "roc_auc", "mcc", "pearson", "spearman", "mse")


def describe(summary: dict) -> str:
    """The summary for people: one line when the run had nothing new to learn."""
    if summary.get("model", {}).get("code") == "no-op":
        model = summary["model"]
        return (f"flow run {summary['flow_run_id']}: {model['decision']}; {model['name']} "
                f"version {model['version']} stays champion ({summary['seconds']:.1f} s)")
    lines = [f"flow run {summary['flow_run_id']}: {summary['state']}"
             + (f" in {summary['seconds']:.1f} s" if summary.get("seconds") else "")]
    lines += [f"  {name:<10} {t['state']:<10} {t['seconds']:>8.1f} s"
              for name, t in summary["tasks"].items()]
    if "error" in summary:
        lines.append(f"error: {summary['error']}")
    for row in summary.get("settings", []):
        names = [key.removesuffix("_mean") for key in row if key.endswith("_mean")][:2]
        lines.append(f"lr {row['learning_rate']:g} x {row['seeds']} seeds: " + ", ".join(
            f"{m} {row[f'{m}_mean']:.4f} +/- {row[f'{m}_sd']:.4f}" for m in names))
    if "dev_metrics" in summary:
        m, model = summary["dev_metrics"], summary["model"]
        shown = dict.fromkeys((model.get("metric"), *SHOWN))
        lines.append("dev: " + ", ".join(f"{k} {m[k]:.4f}" for k in shown if k in m))
        if "best" in summary:
            best = summary["best"]
            lines.append(f"best trial: learning rate {best['learning_rate']:g}, "
                         f"seed {best['seed']}")
        lines.append(f"model {model['name']} version {model['version']} "
                     f"[{', '.join(model['aliases'])}]: {model['decision']}")
    return "\n".join(lines)
