"""Train stage: fine-tune the classifier on the TFRecord shards, as run_classifier does.

    steps, warmup = int(n / batch * epochs), int(0.1 * steps)      (343 and 34 on MRPC)
    data: TFRecords -> repeat -> shuffle(100) -> batch(drop_remainder) -> each batch cut to
          its longest pair (`padding="dynamic"`) -> prefetch                            (tf.data)
    init: the checkpoint's weights (report of what came from it), or random (from scratch)
    Keras callbacks: SpacedBackup every `save_every_steps`, at most one per
    `save_min_seconds` (a killed run resumes there),
    StopAtStep (exactly `steps` updates, resumed or not), per-step history, and progress
    (log lines, a terminal bar, the Prefect progress artifact `training-progress`).

The finished model lands in a folder named by everything that determines it (shards, checkpoint,
configs), written under a temp name and renamed whole.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
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


def build_classifier(raw: RawData, model: ModelConfig, train: TrainConfig,
                     log: Callable[[str], None]) -> BertClassifier:
    """The classifier, initialised from the checkpoint (logging what came from it) or random."""
    from bert_core.model import BertClassifier

    checkpoint = read_checkpoint(raw.checkpoint_dir)
    config = checkpoint.config
    if train.architecture == "bert-tiny":
        config = BertConfig(**{**BertConfig.tiny().to_dict(), "vocab_size": config.vocab_size})
    # Unbucketed, dropout draws its masks at max_seq_length whatever a batch's width, so dynamic
    # padding trains the model max_length padding does. Bucketed batches are other batches
    # anyway: their masks are drawn at their own width (bench/results/step_cost.md: 10 s less).
    classifier = BertClassifier.from_bert_config(
        config, num_labels=len(model.labels),
        dropout_length=None if train.bucket_boundaries else model.max_seq_length)
    if train.init_from_checkpoint:
        report = load_pretrained(classifier, checkpoint)
        log(f"{len(report.from_checkpoint)} weights from {raw.checkpoint_dir}, "
            f"fresh: {', '.join(report.fresh) or 'none'}")
    else:
        log(f"from scratch: all {len(classifier.weights)} weights random ({config})")
    return classifier


def train_dataset(shards: Shards, model: ModelConfig, train: TrainConfig):
    """run_classifier's training input_fn over our TFRecords (TensorFlow's tf.data): the same
    examples in the same batches, each padded as `train.padding` says (or length-bucketed)."""
    import tensorflow as tf

    manifest = json.loads(shards.manifest.read_text())
    files = [str(Path(shards.shard_dir) / s["tfrecord"]) for s in manifest["splits"]["train"]["shards"]]
    seq = model.max_seq_length
    spec = {name: tf.io.FixedLenFeature([seq], tf.int64)
            for name in ("input_ids", "input_mask", "segment_ids")}
    spec["label_ids"] = tf.io.FixedLenFeature([], tf.int64)

    def parse(record):
        example = tf.io.parse_single_example(record, spec)
        example = {k: tf.cast(v, tf.int32) for k, v in example.items()}
        label = example.pop("label_ids")
        return example, label

    autotune = tf.data.AUTOTUNE
    examples = (tf.data.Dataset.from_tensor_slices(files)
                .interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                            num_parallel_calls=autotune, deterministic=True)
                .repeat()
                .shuffle(train.shuffle_buffer, seed=train.seed)
                .map(parse, num_parallel_calls=autotune, deterministic=True))
    if train.bucket_boundaries:
        return bucketed(examples, train.bucket_boundaries, seq, train.batch_size).prefetch(autotune)
    batches = examples.batch(train.batch_size, drop_remainder=True)
    if train.padding == "dynamic":
        batches = batches.map(to_longest, num_parallel_calls=autotune, deterministic=True)
    return batches.prefetch(autotune)


def to_longest(features, label):
    """A batch cut to its longest pair (the most real tokens of any row): the same batch, only
    the all-padding columns dropped. Padding carries no signal (the attention mask drops it)."""
    import tensorflow as tf

    width = tf.reduce_max(tf.reduce_sum(features["input_mask"], axis=1))
    return {k: v[:, :width] for k, v in features.items()}, label


def bucketed(examples, boundaries: tuple[int, ...], max_seq_length: int, batch_size: int):
    """Batches of pairs of similar length, each padded only to its bucket's bound: a pair of
    length n goes to the first bound >= n (max_seq_length above the last). Padding carries no
    signal (the attention mask drops it), so the model computes the same function on less."""
    import tensorflow as tf

    bounds = sorted({b for b in boundaries if b < max_seq_length}) + [max_seq_length]

    def unpad(features, label):  # (seq,) -> (n,): bucketing pads each batch back to its bound
        n = tf.reduce_sum(features["input_mask"])
        return {k: v[:n] for k, v in features.items()}, label

    return examples.map(unpad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) \
        .bucket_by_sequence_length(
            lambda features, label: tf.shape(features["input_ids"])[0],
            bucket_boundaries=[b + 1 for b in bounds],  # length n < b + 1: padded to b
            bucket_batch_sizes=[batch_size] * (len(bounds) + 1), drop_remainder=True,
            pad_to_bucket_boundary=True)


def _distribution_scope():
    """Several GPUs: a MirroredStrategy scope; otherwise nothing."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if len(tf.config.list_physical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy().scope()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _dtype_policy(mixed: bool):
    """Mixed precision for the model built inside, without leaving a global policy behind."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16" if mixed else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def fit(raw: RawData, shards: Shards, model: ModelConfig, train: TrainConfig, work: Path,
        log: Callable[[str], None]) -> tuple[BertClassifier, int, float]:
    """Train in `work` (backups and history live there); returns the model, its steps, seconds."""
    from bert_core.backend import import_tensorflow

    import_tensorflow()
    import keras

    from bert_core.optimizer import create_optimizer, train_steps

    keras.utils.set_random_seed(train.seed)
    n_train = json.loads(shards.manifest.read_text())["splits"]["train"]["rows"]
    steps, warmup = train_steps(n_train, train.batch_size, train.epochs, train.warmup_proportion)
    steps_per_epoch = max(1, math.ceil(n_train / train.batch_size))
    with _distribution_scope(), _dtype_policy(train.mixed_precision):
        classifier = build_classifier(raw, model, train, log)
        classifier.compile(optimizer=create_optimizer(train.learning_rate, steps, warmup),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           metrics=["accuracy"], jit_compile=train.jit_compile)
    log(f"{n_train} examples, batch {train.batch_size}: {steps} steps, {warmup} warmup")
    backup, callbacks = _callbacks(train, work, steps, log)
    start = time.perf_counter()
    classifier.fit(train_dataset(shards, model, train), epochs=math.ceil(steps / steps_per_epoch),
                   shuffle=False,  # the dataset shuffles, as run_classifier does
                   # a resumed run starts at the epoch its backup was in (the backup restores
                   # the weights and the step; StopAtStep ends it at `steps` all the same)
                   initial_epoch=backup.latest_step() // steps_per_epoch,
                   steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=0)
    return classifier, int(classifier.optimizer.iterations.numpy()), time.perf_counter() - start


def _callbacks(train: TrainConfig, work: Path, steps: int, log: Callable[[str], None]):
    """(the backup, every callback of `fit` in order): the backup restores before the others
    read the step; progress goes to `log`, a terminal bar, and inside a Prefect task run its
    progress artifact."""
    from tasks.callbacks import SpacedBackup, StepHistory, StopAtStep, TrainingProgress
    from tasks.progress import task_progress

    backup = SpacedBackup(str(work / "backup"), save_freq=train.save_every_steps,
                          min_seconds=train.save_min_seconds)
    report = task_progress("training-progress", f"fine-tune: {steps} steps")
    return backup, [backup, StopAtStep(steps), StepHistory(work / "history.jsonl", log),
                    TrainingProgress(steps, train.batch_size, log, report)]


def read_history(path: Path, batch_size: int, seconds: float) -> dict:
    """The JSON-lines log as history.json; a step logged twice (redone after a resume) keeps its
    last value; `resumed_from_step` is the step of the last resume (None if never killed)."""
    steps, epochs, resumed = {}, {}, None
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "resumed_from_step" in record:
            resumed = record["resumed_from_step"]
        elif "epoch" in record:
            epochs[record["step"]] = record
        else:
            steps[record["step"]] = record
    ordered = [steps[s] for s in sorted(steps)]
    return {"steps": [r["step"] for r in ordered], "loss": [r["loss"] for r in ordered],
            "learning_rate": [r["learning_rate"] for r in ordered],
            "epochs": [epochs[s] for s in sorted(epochs)], "resumed_from_step": resumed,
            "examples_per_second": (len(ordered) - (resumed or 0)) * batch_size
            / max(seconds, 1e-9)}  # `seconds` counts this process's steps only


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
            classifier, steps, seconds = fit(raw, shards, model, train, work, log)
            _save(classifier, raw, model, train, work, out, steps, seconds, replace=refresh)
            shutil.rmtree(work, ignore_errors=True)
    record = TrainedModel.model_validate_json((out / "record.json").read_text())
    return record.model_copy(update={"files": sealed_files(out)})


def _save(classifier, raw: RawData, model: ModelConfig, train: TrainConfig, work: Path,
          out: Path, steps: int, seconds: float, replace: bool = False) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        classifier.save(tmp / "model.keras")
        history = read_history(work / "history.jsonl", train.batch_size, seconds)
        write_json(tmp / "history.json", history)
        shutil.copyfile(raw.vocab_file, tmp / "vocab.txt")
        write_json(tmp / "bert_config.json", classifier.backbone.bert_config.to_dict())
        write_json(tmp / "train_config.json", {"model": model.model_dump(),
                                               "train": train.model_dump()})
        record = TrainedModel(
            model_dir=str(out), model_sha256=sha256_file(tmp / "model.keras"), steps=steps,
            seconds=round(seconds, 3), init="checkpoint" if train.init_from_checkpoint else "scratch",
            max_seq_length=model.max_seq_length, do_lower_case=model.do_lower_case,
            labels=model.labels)
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
