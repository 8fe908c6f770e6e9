"""The sweep flow: the fine-tune over every (learning rate, seed) of a grid, under one MLflow
parent run; mean +/- sd per learning rate; only the best trial is registered."""

from __future__ import annotations

from prefect import flow

from flows.finetune import announce, evidence, flatten, lineage
from tasks.config import PipelineConfig, SweepConfig
from tasks.download import download
from tasks.drift_check import profile_data
from tasks.evaluate import evaluate
from tasks.incumbent import evaluation_examples, find_champion, score_champion
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
    best_cfg = with_trial(cfg, best.learning_rate, best.seed)
    seen = lineage(raw, None, best_cfg)
    champion = find_champion(registry, cfg.home)
    profile = profile_data(raw, cfg.task, cfg.model, cfg.home)
    examples = evaluation_examples(raw, cfg.task, cfg.home)
    scores = score_champion(champion, examples, best.trained.labels, cfg.home) if champion \
        else None
    version = register(best.trained, best.report, registry, cfg.home, params=flatten(best_cfg),
                       tags=seen, extra_artifacts=[*artifacts, profile.path],
                       evidence=evidence(raw, shards, examples, champion, scores, profile, seen),
                       parent_run_id=parent)
    announce(version, seen)
    return SweepResult(parent_run_id=parent, settings=settings, best_learning_rate=
                       best.learning_rate, best_seed=best.seed, version=version)


sweep_mrpc = sweep  # the entrypoint of deployments made before tasks other than MRPC
