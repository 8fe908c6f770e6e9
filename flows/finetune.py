"""The fine-tune flow of any task: download -> validate -> tokenize -> train -> evaluate -> register."""

from __future__ import annotations

from types import SimpleNamespace

from prefect import flow

from tasks.caching import stages_from
from tasks.config import PipelineConfig, Stage
from tasks.download import download
from tasks.evaluate import evaluate
from tasks.records import ModelVersion, RawData
from tasks.register import register
from tasks.tokenize import tokenize
from tasks.train import train
from tasks.validate import validate


def flatten(cfg: PipelineConfig) -> dict[str, object]:
    """The config as MLflow params: {"train.learning_rate": 2e-05, "data.mirror": None, ...}."""
    flat: dict[str, object] = {}

    def walk(prefix: str, value):
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            flat[prefix] = value

    walk("", cfg.model_dump(mode="json"))
    return flat


def lineage(raw: RawData) -> dict[str, str]:
    """MLflow tags naming the task and the content the model came from: task, sha256.train.tsv,
    sha256.checkpoint..."""
    return {"task": raw.task, **{f"sha256.{name}": digest for name, digest in raw.sha256.items()}}


STAGE_TASKS = {"download": download, "validate": validate, "tokenize": tokenize, "train": train,
               "evaluate": evaluate, "register": register}


def stages(rerun: Stage | None) -> SimpleNamespace:
    """The stage tasks, those from `rerun` on told to run again whatever their cache holds."""
    again = stages_from(rerun)
    return SimpleNamespace(**{name: task.with_options(refresh_cache=True) if name in again
                              else task for name, task in STAGE_TASKS.items()})


@flow(name="finetune")
def finetune(cfg: PipelineConfig = PipelineConfig(), parent_run_id: str | None = None,
             rerun: Stage | None = None) -> ModelVersion:
    """Fine-tune BERT on `cfg.task` and register it; every step is cached by content across
    runs (`rerun`: run that stage and every one after it again)."""
    run = stages(rerun)
    raw = run.download(cfg.task, cfg.data, cfg.home)
    validation = run.validate(raw, cfg.task, cfg.data, cfg.home)
    shards = run.tokenize(raw, cfg.task, cfg.data, cfg.model, cfg.home)
    trained = run.train(raw, shards, cfg.model, cfg.train, cfg.home)
    report = run.evaluate(trained, shards, cfg.eval, cfg.home)
    return run.register(trained, report, cfg.registry_for_task, cfg.home,
                        params=flatten(cfg), tags=lineage(raw),
                        extra_artifacts=[validation, str(shards.manifest)],
                        parent_run_id=parent_run_id)


finetune_mrpc = finetune  # the entrypoint of deployments made before tasks other than MRPC
