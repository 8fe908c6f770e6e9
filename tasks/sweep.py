"""Sweep bookkeeping: one MLflow parent run over a grid of fine-tunes (learning rate x seed), the
mean +/- sd of each setting's dev metrics, and the trial to register.

    parent run "sweep-<flow run>"     params: the grid; tag bertflow.sweep=true
      child run per trial             logged by `track` (train, eval, models), nested under it
    parent metrics                    <metric>_mean / <metric>_sd per setting, e.g.
                                      "lr_2e-05.dev_f1_mean"; best_dev_<promote metric>
    parent artifact sweep.md          the settings table and the best trial
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param, RunStatus
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict

from tasks.config import RegistryConfig, SweepConfig
from tasks.records import EvalReport, ModelVersion, TrainedModel
from tasks.mlflow_store import TransientRegistryError, open_store, tracking_uri, transient_errors
from tasks.gate import lower_is_better
from tasks.retry import retry_on

REPORTED = ("accuracy", "f1", "roc_auc")


class Trial(BaseModel):
    """One fine-tune of the grid and how it scored on dev."""

    model_config = ConfigDict(frozen=True)

    learning_rate: float
    seed: int
    run_id: str
    trained: TrainedModel
    report: EvalReport


class SweepResult(BaseModel):
    """What the sweep flow returns: mean +/- sd per setting and the registered best trial."""

    parent_run_id: str
    settings: list[dict]
    best_learning_rate: float
    best_seed: int
    version: ModelVersion


def reported(trials: list[Trial], metric: str) -> tuple[str, ...]:
    """The dev metrics a sweep reports: the one that promotes, then accuracy, F1 and ROC AUC
    where the task has them (a regression task has none of those)."""
    names = dict.fromkeys((metric, *REPORTED))
    return tuple(name for name in names if all(name in t.report.metrics for t in trials))


def setting_stats(trials: list[Trial], metrics: tuple[str, ...] = REPORTED) -> list[dict]:
    """Mean and sample sd (0 for one seed) of each metric per learning rate, in grid order:
    [{"learning_rate": 2e-05, "seeds": 3, "f1_mean": 0.81, "f1_sd": 0.012, ..., "collapsed": 0}]"""
    rows = []
    for lr in dict.fromkeys(t.learning_rate for t in trials):
        group = [t for t in trials if t.learning_rate == lr]
        row = {"learning_rate": lr, "seeds": len(group)}
        for name in metrics:
            values = [t.report.metrics[name] for t in group]
            row[f"{name}_mean"] = float(np.mean(values))  # NaN in, NaN out (a one-class dev AUC)
            row[f"{name}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        row["collapsed"] = sum(t.report.collapsed for t in group)
        rows.append(row)
    return rows


def best_trial(trials: list[Trial], metric: str) -> Trial:
    """The best dev `metric` (highest; lowest for a loss) among trials that did not collapse (among all when every one did;
    register then records it as collapsed and does not promote it). Ties go to the earlier one."""
    healthy = [t for t in trials if not t.report.collapsed] or trials
    sign = -1 if lower_is_better(metric) else 1
    return max(healthy, key=lambda t: sign * t.report.metrics[metric])


def sweep_markdown(rows: list[dict], best: Trial, metric: str) -> str:
    names = [key.removesuffix("_mean") for key in rows[0] if key.endswith("_mean")]
    header = ["learning rate", "seeds", *(f"dev {m} (mean +/- sd)" for m in names), "collapsed"]
    lines = [f"# Sweep ({best.trained.task})", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"{row['learning_rate']:g}", str(row["seeds"]),
                 *(f"{row[f'{m}_mean']:.4f} +/- {row[f'{m}_sd']:.4f}" for m in names),
                 str(row["collapsed"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Best trial: learning rate {best.learning_rate:g}, seed {best.seed}, "
                  f"dev {metric} {best.report.metrics[metric]:.4f} (MLflow run `{best.run_id}`)."]
    return "\n".join(lines) + "\n"


@task(name="open-sweep-run", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=1),
      retry_condition_fn=retry_on(TransientRegistryError))
def open_sweep_run(cfg: RegistryConfig, sweep: SweepConfig, home: str) -> str:
    """The sweep's parent MLflow run, holding the grid as params; returns its id."""
    with transient_errors(tracking_uri(cfg, Path(home))):
        client, experiment_id = open_store(cfg, Path(home))
        run = client.create_run(experiment_id, run_name=f"sweep-{flow_run.name or 'local'}",
                                tags={"bertflow.sweep": "true",
                                      "prefect.flow_run_id": str(flow_run.id)})
        client.log_batch(run.info.run_id, params=[
            Param("sweep.learning_rates", ",".join(f"{lr:g}" for lr in sweep.learning_rates)),
            Param("sweep.seeds", ",".join(map(str, sweep.seeds)))], synchronous=True)
        return run.info.run_id


@task(name="close-sweep-run", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=1),
      retry_condition_fn=retry_on(TransientRegistryError))
def close_sweep_run(run_id: str, trials: list[Trial], cfg: RegistryConfig, home: str) -> list[dict]:
    """Mean +/- sd per setting as the parent run's metrics and sweep.md; returns the rows."""
    rows = setting_stats(trials, reported(trials, cfg.promote_metric))
    best = best_trial(trials, cfg.promote_metric)
    markdown = sweep_markdown(rows, best, cfg.promote_metric)
    now = int(time.time() * 1000)
    metrics = [Metric(f"lr_{row['learning_rate']:g}.dev_{key}", float(row[key]), now, 0)
               for row in rows for key in row if key.endswith(("_mean", "_sd"))]
    metrics.append(Metric(f"best_dev_{cfg.promote_metric}",
                          best.report.metrics[cfg.promote_metric], now, 0))
    with transient_errors(tracking_uri(cfg, Path(home))):
        client, _ = open_store(cfg, Path(home))
        client.log_batch(run_id, metrics=metrics, synchronous=True)
        client.set_tag(run_id, "best_run_id", best.run_id)
        client.log_text(run_id, markdown, "sweep.md")
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    create_markdown_artifact(key="sweep-summary", markdown=markdown,
                             description=f"{len(trials)} trials, {len(rows)} settings")
    get_run_logger().info("sweep: %s", markdown)
    return rows

