"""The sweep flow: the fine-tune over every (learning rate, seed) of a grid, under one MLflow
parent run; mean +/- sd per learning rate; only the best trial is registered."""

from __future__ import annotations

from prefect import flow

from flows.finetune import flatten, lineage
from tasks.config import PipelineConfig, SweepConfig
from tasks.download import download
from tasks.evaluate import evaluate
from tasks.register import register, track
from tasks.sweep import SweepResult, Trial, best_trial, close_sweep_run, open_sweep_run
from tasks.tokenize import tokenize
from tasks.train import train
from tasks.validate import validate


def with_trial(cfg: PipelineConfig, learning_rate: float, seed: int) -> PipelineConfig:
    return cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"learning_rate": learning_rate, "seed": seed})})


@flow(name="sweep")
def sweep(cfg: PipelineConfig = PipelineConfig(),
          grid: SweepConfig = SweepConfig()) -> SweepResult:
    """Data once, then one trial per grid point (each cached like the fine-tune's own train and
    evaluate); the best trial is registered and competes for `champion`."""
    raw = download(cfg.task, cfg.data, cfg.home)
    validation = validate(raw, cfg.task, cfg.data, cfg.home)
    shards = tokenize(raw, cfg.task, cfg.data, cfg.model, cfg.home)
    artifacts = [validation, str(shards.manifest)]
    registry = cfg.registry_for_task
    parent = open_sweep_run(registry, grid, cfg.home)
    trials = []
    for learning_rate in grid.learning_rates:
        for seed in grid.seeds:
            trial_cfg = with_trial(cfg, learning_rate, seed)
            trained = train(raw, shards, cfg.model, trial_cfg.train, cfg.home)
            report = evaluate(trained, shards, cfg.eval, cfg.home)
            run_id = track(trained, report, registry, cfg.home, params=flatten(trial_cfg),
                           tags=lineage(raw), extra_artifacts=artifacts, parent_run_id=parent)
            trials.append(Trial(learning_rate=learning_rate, seed=seed, run_id=run_id,
                                trained=trained, report=report))
    settings = close_sweep_run(parent, trials, registry, cfg.home)
    best = best_trial(trials, registry.promote_metric)
    version = register(best.trained, best.report, registry, cfg.home,
                       params=flatten(with_trial(cfg, best.learning_rate, best.seed)),
                       tags=lineage(raw), extra_artifacts=artifacts, parent_run_id=parent)
    return SweepResult(parent_run_id=parent, settings=settings, best_learning_rate=
                       best.learning_rate, best_seed=best.seed, version=version)


sweep_mrpc = sweep  # the entrypoint of deployments made before tasks other than MRPC
