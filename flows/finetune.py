"""The fine-tune flow of any task, on the newest data drop:

    find-drop -> download -> champion (a no-op if it was trained on exactly this) -> validate
    -> profile -> drift (stops here when a check blocks) -> tokenize -> train -> evaluate
    -> score-champion -> register (parity, then the significance gate, then the aliases)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

from prefect import flow

from flows.automations import emit_outcome
from tasks.caching import stages_from
from tasks.challenge import Evidence
from tasks.config import PipelineConfig, RegistryConfig, Stage
from tasks.download import download, on_eval_set
from tasks.drift_check import DriftOutcome, ProfileFile, check_drift, profile_data
from tasks.drops import Drop, find_drop, in_drop
from tasks.evaluate import evaluate
from tasks.incumbent import Examples, Incumbent, Scores, evaluation_examples, find_champion, \
    note_outcome, score_champion
from tasks.profile import DataProfile, majority_label, mean_score
from tasks.records import ModelVersion, RawData, Shards
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


def digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def lineage(raw: RawData, drop: Drop | None = None, cfg: PipelineConfig | None = None
            ) -> dict[str, str]:
    """MLflow tags naming the task and the content the model came from: task, sha256.train.tsv,
    sha256.checkpoint...; the drop's name; data.digest (of the task's files) and training.key
    (the data, the checkpoint and what shapes training): a run whose key is the champion's has
    nothing new to learn."""
    files = {name: sha for name, sha in raw.sha256.items() if name != "checkpoint"}
    tags = {"task": raw.task, **{f"sha256.{name}": sha for name, sha in raw.sha256.items()},
            "data.digest": digest(files)}
    if drop is not None:
        tags["drop"] = drop.name
    if cfg is not None:
        tags["training.key"] = digest([tags["data.digest"], raw.sha256.get("checkpoint"),
                                       cfg.task.model_dump(), cfg.model.model_dump(),
                                       cfg.train.model_dump(), cfg.eval.model_dump()])
    return tags


def champion_stays(champion: Incumbent, code: str, decision: str, registry: RegistryConfig,
                   value: float = float("nan")) -> ModelVersion:
    """The champion, untouched, as the answer of a run that made no version."""
    return ModelVersion(name=champion.name, version=champion.version, run_id=champion.run_id,
                        tracking_uri=champion.tracking_uri, aliases=("champion",),
                        promoted=False, code=code, metric=registry.promote_metric, value=value,
                        decision=decision)


def unchanged(champion: Incumbent | None, seen: dict[str, str], registry: RegistryConfig
              ) -> ModelVersion | None:
    """The champion, as this run's answer, when it was trained on exactly this (a no-op)."""
    if champion is None or champion.tags.get("training.key") != seen["training.key"]:
        return None
    what = f"drop {seen['drop']}" if "drop" in seen else "the data"
    return champion_stays(champion, "no-op", f"no-op: {what} is what {champion.label} was "
                          "trained on", registry, float(champion.tags.get("value", "nan")))


def blocked(champion: Incumbent, drift: DriftOutcome, registry: RegistryConfig) -> ModelVersion:
    """The champion, untouched, as the answer of a run that drift stopped before training."""
    return champion_stays(champion, "blocked-by-drift", f"not trained: {drift.summary}",
                          registry)


def announce(version: ModelVersion, seen: dict[str, str]) -> ModelVersion:
    """The outcome as a Prefect event (automations notify on the ones that need a look)."""
    emit_outcome(version.code, version.name, version.version, version.decision,
                 {"drop": seen.get("drop", ""), "data.digest": seen["data.digest"],
                  "metric": version.metric, "value": repr(version.value)})
    return version


STAGE_TASKS = {"download": download, "validate": validate, "tokenize": tokenize, "train": train,
               "evaluate": evaluate, "register": register}


def stages(rerun: Stage | None) -> SimpleNamespace:
    """The stage tasks, those from `rerun` on told to run again whatever their cache holds."""
    again = stages_from(rerun)
    return SimpleNamespace(**{name: task.with_options(refresh_cache=True) if name in again
                              else task for name, task in STAGE_TASKS.items()})


def evidence(raw: RawData, shards: Shards, examples: Examples, champion: Incumbent | None,
             scores: Scores | None, profile: ProfileFile, seen: dict[str, str]) -> Evidence:
    """What the gate weighs: the champion's outputs on the evaluation set, or (with none) the
    constant predictor of the training data's profile."""
    stored = DataProfile.model_validate_json(Path(profile.path).read_text())
    return Evidence(examples=examples, incumbent=champion, scores=scores,
                    manifest=str(shards.manifest), lineage=seen,
                    baseline_label=None if stored.regression else majority_label(stored),
                    baseline_score=mean_score(stored) if stored.regression else None)


@flow(name="finetune")
def finetune(cfg: PipelineConfig = PipelineConfig(), parent_run_id: str | None = None,
             rerun: Stage | None = None) -> ModelVersion:
    """Fine-tune BERT on `cfg.task` (on the newest drop, with data.drops) and register it;
    the champion moves only to a significantly better model. Every step is cached by content
    across runs (`rerun`: run that stage and every one after it again)."""
    run = stages(rerun)
    registry = cfg.registry_for_task
    drop = find_drop(cfg.data)
    task_cfg, data = in_drop(on_eval_set(cfg.task, registry.eval_set), cfg.data, drop)
    raw = run.download(task_cfg, data, cfg.home, eval_set=registry.eval_set)
    seen = lineage(raw, drop, cfg)
    champion = find_champion(registry, cfg.home)
    if no_op := unchanged(champion, seen, registry):
        note_outcome(registry, cfg.home, {"code": no_op.code, "reason": no_op.decision,
                                          "version": no_op.version, "drop": seen.get("drop", "")})
        return announce(no_op, seen)
    validation = run.validate(raw, task_cfg, data, cfg.home)
    profile = profile_data(raw, task_cfg, cfg.model, cfg.home)
    examples = evaluation_examples(raw, task_cfg, cfg.home)
    drift = check_drift(profile, champion, raw, task_cfg, examples, cfg.drift, registry,
                        cfg.home, seen)
    if drift.blocked:
        return announce(blocked(champion, drift, registry), seen)
    shards = run.tokenize(raw, task_cfg, data, cfg.model, cfg.home)
    trained = run.train(raw, shards, cfg.model, cfg.train, cfg.home)
    report = run.evaluate(trained, shards, cfg.eval, cfg.home)
    scores = score_champion(champion, examples, trained.labels, cfg.home) if champion else None
    version = run.register(trained, report, registry, cfg.home, params=flatten(cfg), tags=seen,
                           extra_artifacts=[validation, str(shards.manifest), profile.path,
                                            *drift.report_files],
                           evidence=evidence(raw, shards, examples, champion, scores, profile,
                                             seen),
                           parent_run_id=parent_run_id)
    return announce(version, seen)


finetune_mrpc = finetune  # the entrypoint of deployments made before tasks other than MRPC
