"""Train stage: fine-tune the classifier on the shards (bert_core/trainer.py does the work, on
whichever Keras backend is loaded), and publish the model.

    init: the checkpoint's weights (report of what came from it), or random (from scratch)
    data: the Parquet train split (and dev, for evaluation during training)
    head: one logit per class of the shards' manifest, or one unit for a regression task

The finished model lands in a folder named by everything that determines it (shards, checkpoint,
configs, code, libraries, backend), written under a temp name and renamed whole.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import get_run_logger, task

from bert_core.checkpoint import load_pretrained, read_checkpoint
from bert_core.config import BertConfig
from tasks.atomic import exclusive, publish_dir, write_json
from tasks.caching import cached, content_key, refreshing
from tasks.config import ModelConfig, TrainConfig
from tasks.fingerprint import sealed_files, sha256_file, unsealed
from tasks.records import RawData, Shards, TrainedModel

# Keras (and TensorFlow under it) is imported where training needs it, not here: a run whose
# train task is cached never pays the ~5 s import (bench/pipeline.py's warm rerun).
if TYPE_CHECKING:
    from bert_core.model import BertClassifier
    from bert_core.trainer import Trained

logger = logging.getLogger(__name__)
# What shapes the trained numbers besides our own code; the Keras backend is named in the key too.
LIBRARIES = ("tensorflow", "keras", "numpy", "jax", "jaxlib")
# Settings that change when backups are written, never the model.
UNUSED = ("save_every_steps", "save_min_seconds")


def train_key(shards: Shards, raw: RawData, model: ModelConfig, train: TrainConfig) -> str:
    """The model folder's name: the train stage's code, libraries, backend and content inputs."""
    return content_key("train", __name__, LIBRARIES, {
        "shards": shards.manifest_sha256, "checkpoint": raw.sha256["checkpoint"], "model": model,
        "train": train,
        "backend": keras_backend()}, {"train": UNUSED})


def read_manifest(shards: Shards) -> dict:
    """The shards' manifest: the task, its label names (in logit order; [] for a regression)
    and splits."""
    return json.loads(shards.manifest.read_text())


def head_units(manifest: dict) -> int:
    """Outputs of the classifier's head: one logit per class, or one score for a regression.

    >>> head_units({"labels": ["0", "1"], "regression": False})
    2
    >>> head_units({"labels": [], "regression": True})
    1
    """
    return 1 if manifest["regression"] else len(manifest["labels"])


def build_classifier(raw: RawData, model: ModelConfig, train: TrainConfig, num_labels: int,
                     log: Callable[[str], None]) -> BertClassifier:
    """The classifier with `num_labels` outputs, initialised from the checkpoint (logging what
    came from it) or random."""
    from bert_core.model import BertClassifier

    checkpoint = read_checkpoint(raw.checkpoint_dir)
    config = checkpoint.config
    if train.architecture == "bert-tiny":
        config = BertConfig(**{**BertConfig.tiny().to_dict(), "vocab_size": config.vocab_size})
    # Unbucketed, dropout draws its masks at max_seq_length whatever a batch's width, so dynamic
    # padding trains the model max_length padding does. Bucketed batches are other batches
    # anyway: their masks are drawn at their own width (bench/results/step_cost.md: 10 s less).
    classifier = BertClassifier.from_bert_config(
        config, num_labels=num_labels,
        dropout_length=None if train.bucket_boundaries else model.max_seq_length)
    if train.init_from_checkpoint:
        report = load_pretrained(classifier, checkpoint)
        log(f"{len(report.from_checkpoint)} weights from {raw.checkpoint_dir}, "
            f"fresh: {', '.join(report.fresh) or 'none'}")
    else:
        log(f"from scratch: all {len(classifier.weights)} weights random ({config})")
    return classifier


def train_model(raw: RawData, shards: Shards, model: ModelConfig, train: TrainConfig,
                home: Path, log: Callable[[str], None] = logger.info,
                refresh: bool = False) -> TrainedModel:
    """Train (or resume, or reuse an intact model folder of) the model these inputs determine;
    with `refresh`, train again whatever exists."""
    key = train_key(shards, raw, model, train)
    out, work = home / "models" / key, home / "training" / key
    # One trainer per model: a second run of the same inputs waits, then finds the model.
    with exclusive(home / "training" / f"{key}.lock", on_wait=log):
        if refresh or (reason := unsealed(out)):
            if not refresh and out.exists():
                log(f"training again: {reason}")
            work.mkdir(parents=True, exist_ok=True)
            manifest = read_manifest(shards)
            trained = fit(raw, shards, manifest, model, train, work, log)
            _save(trained, raw, manifest, model, train, work, out, replace=refresh)
            shutil.rmtree(work, ignore_errors=True)
    record = TrainedModel.model_validate_json((out / "record.json").read_text())
    return record.model_copy(update={"files": sealed_files(out)})


def fit(raw: RawData, shards: Shards, manifest: dict, model: ModelConfig, train: TrainConfig,
        work: Path, log: Callable[[str], None]) -> Trained:
    """Train in `work` (backups and history live there), with progress in the task's artifact;
    `manifest` (the shards') says the task's head."""
    from bert_core.backend import import_tensorflow

    import_tensorflow()
    from bert_core.inputs import read_split
    from bert_core.optimizer import train_steps
    from bert_core.trainer import fine_tune
    from tasks.progress import task_progress

    n = manifest["splits"]["train"]["rows"]
    steps = train_steps(n, train.batch_size, train.epochs, train.warmup_proportion)[0]
    report = task_progress("training-progress", f"fine-tune: {steps} steps")
    dev = read_split(shards.shard_dir, "dev") if train.eval_every_steps else None
    units = head_units(manifest)
    return fine_tune(lambda: build_classifier(raw, model, train, units, log),
                     read_split(shards.shard_dir, "train"), train, work, log, report, dev)


def _save(trained: Trained, raw: RawData, manifest: dict, model: ModelConfig, train: TrainConfig,
          work: Path, out: Path, replace: bool = False) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        from bert_core.trainer import read_history

        classifier = trained.model
        classifier.save(tmp / "model.keras")
        history = read_history(work / "history.jsonl", train.batch_size, trained.seconds)
        write_json(tmp / "history.json", history)
        shutil.copyfile(raw.vocab_file, tmp / "vocab.txt")
        write_json(tmp / "bert_config.json", classifier.backbone.bert_config.to_dict())
        write_json(tmp / "train_config.json", {"model": model.model_dump(),
                                               "train": train.model_dump()})
        record = TrainedModel(
            model_dir=str(out), model_sha256=sha256_file(tmp / "model.keras"),
            steps=trained.steps, seconds=round(trained.seconds, 3),
            init="checkpoint" if train.init_from_checkpoint else "scratch",
            max_seq_length=model.max_seq_length, do_lower_case=model.do_lower_case,
            labels=tuple(manifest["labels"]), task=manifest["task"], pair=manifest["pair"])
        (tmp / "record.json").write_text(record.model_dump_json(indent=2))
        publish_dir(tmp, out, replace=replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def keras_backend() -> str:
    """The backend Keras will load (read as Keras reads it, without importing Keras)."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


@task(name="train", **cached("train", __name__, LIBRARIES, ignore={"cfg": UNUSED},
                             extra_key=lambda inputs: keras_backend()))
def train(raw: RawData, shards: Shards, model: ModelConfig, cfg: TrainConfig,
          home: str) -> TrainedModel:
    """Fine-tune the classifier; a rerun after a crash resumes from the last backup."""
    log = get_run_logger().info
    trained = train_model(raw, shards, model, cfg, Path(home), log, refresh=refreshing())
    log(f"trained {trained.steps} steps in {trained.seconds:.1f} s -> {trained.model_dir}")
    return trained
