"""The fine-tune itself, on any Keras backend (TensorFlow, JAX) and with no orchestrator.

    steps, warmup = int(n / batch * epochs), int(0.1 * steps)       (343 and 34 on MRPC)
    data:  inputs.TrainBatches over the Parquet train split: run_classifier's shuffled batches,
           each padded as `padding` says (or length-bucketed), micro-batched for accumulation
    model: built by the caller inside the device and precision scopes set here
    loss:  cross-entropy on class ids (int labels), optionally class-weighted; mean squared
           error on a 1-unit head for scores (float labels: a regression task such as STS-B)
    fit:   Keras `fit` with callbacks: SpacedBackup (a killed run resumes at its last backup,
           with the very batches it would have seen), StopAtStep (exactly `steps` updates),
           dev evaluation + EarlyStopping when asked, per-step history, progress

Devices: every visible accelerator, or every logical CPU when there is more than one (tests),
data-parallel (TensorFlow's MirroredStrategy; Keras' DataParallel on JAX). The global batch stays
`batch_size`: each device gets its share, and steps and the learning-rate schedule do not change.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from bert_core.callbacks import (
    DevEvaluation,
    SpacedBackup,
    StepHistory,
    StopAtStep,
    TrainingProgress,
)
from bert_core.inputs import Split, TrainBatches, balanced_weights
from bert_core.optimizer import create_optimizer, train_steps
from bert_core.progress import Report
from bert_core.train_config import TrainConfig

XLA_WIDTH_MULTIPLE = 8  # an XLA step compiles once per batch shape: widths rounded up to this


@dataclass(frozen=True)
class Trained:
    model: keras.Model
    steps: int
    seconds: float  # this process's training, resumed steps only


def width_multiple(cfg: TrainConfig) -> int:
    """The multiple batch widths are rounded up to: 8 where each new width compiles (JAX, or
    TensorFlow with jit_compile), so MRPC's widths make 14 shapes instead of ~90; else 1."""
    compiled = keras.backend.backend() == "jax" or cfg.jit_compile
    return XLA_WIDTH_MULTIPLE if compiled else 1


def keras_input(batches: TrainBatches, start: int):
    """What `fit` reads: the micro-batches from step `start` on. TensorFlow gets a tf.data
    wrapper whose width is left open (Keras would fix it from the first two batches)."""
    if keras.backend.backend() != "tensorflow":
        return batches.iterate(start)
    import tensorflow as tf

    ints = tf.TensorSpec((None, None), tf.int32)
    labels = tf.TensorSpec((None,), tf.float32 if batches.split.regression else tf.int32)
    weights = () if batches.weights is None else (tf.TensorSpec((None,), tf.float32),)
    signature = ({name: ints for name in ("input_ids", "input_mask", "segment_ids")}, labels,
                 *weights)
    data = tf.data.Dataset.from_generator(lambda: batches.iterate(start),
                                          output_signature=signature)
    options = tf.data.Options()  # one generator: a strategy splits each batch, never the files
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return data.with_options(options)


@contextlib.contextmanager
def data_parallel() -> Iterator[int]:
    """Build and train inside this to use every device; yields how many there are."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        if len(devices) > 1:
            with tf.distribute.MirroredStrategy([d.name for d in devices]).scope():
                yield len(devices)
            return
    elif backend == "jax":
        import jax

        devices = jax.devices()
        if len(devices) > 1:
            previous = keras.distribution.distribution()
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
            try:
                yield len(devices)
            finally:
                keras.distribution.set_distribution(previous)
            return
    yield 1


@contextlib.contextmanager
def dtype_policy(precision: str):
    """The precision policy for the model built inside, without leaving a global one behind."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def fine_tune(build: Callable[[], keras.Model], train: Split, cfg: TrainConfig, work: Path,
              log: Callable[[str], None], report: Report | None = None,
              dev: Split | None = None) -> Trained:
    """Train the model `build` makes on `train` as `cfg` says; backups and history.jsonl live in
    `work` (a run killed earlier resumes from its backup there). `dev` is needed for periodic
    evaluation (`cfg.eval_every_steps`). Float labels in `train` make it a regression: `build`
    must then make a 1-unit head."""
    check_settings(cfg, train)
    work.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    n = len(train.guids)
    steps, warmup = train_steps(n, cfg.batch_size, cfg.epochs, cfg.warmup_proportion)
    batches = TrainBatches(train, steps, cfg.batch_size, cfg.seed, cfg.shuffle_buffer, cfg.padding,
                           cfg.bucket_boundaries, width_multiple(cfg), cfg.accumulate_steps,
                           sample_weights(train, cfg))
    with data_parallel() as devices, dtype_policy(cfg.precision):
        model = build()
        check_head(model, train.regression)
        loss, metrics = task_loss(train.regression)
        model.compile(optimizer=create_optimizer(cfg.learning_rate, steps, warmup,
                                                 cfg.accumulate_steps),
                      loss=loss, metrics=metrics,
                      jit_compile=cfg.jit_compile if keras.backend.backend() == "tensorflow"
                      else "auto")
        log(_plan_line(cfg, n, steps, warmup, devices, train.regression))
        backup, callbacks = _callbacks(cfg, work, steps, log, report, dev)
        start = backup.latest_step()  # SpacedBackup restores it when fit begins
        period = cfg.eval_every_steps or max(1, math.ceil(n / cfg.batch_size))  # an epoch
        clock = time.perf_counter()
        model.fit(keras_input(batches, start), epochs=math.ceil(steps / period),
                  initial_epoch=start // period, steps_per_epoch=period * cfg.accumulate_steps,
                  shuffle=False, callbacks=callbacks, verbose=0)
        seconds = time.perf_counter() - clock
    return Trained(model, int(keras.ops.convert_to_numpy(model.optimizer.iterations)), seconds)


def _plan_line(cfg: TrainConfig, n: int, steps: int, warmup: int, devices: int,
               regression: bool) -> str:
    return (f"{n} examples, batch {cfg.batch_size}: {steps} steps, {warmup} warmup"
            + (f", {devices} devices" if devices > 1 else "")
            + (f", {cfg.accumulate_steps} micro-batches each" if cfg.accumulate_steps > 1 else "")
            + (f", {cfg.precision}" if cfg.precision != "float32" else "")
            + (", regression" if regression else "")
            + (f", class weights {cfg.class_weight}" if cfg.class_weight != "none" else ""))


def check_settings(cfg: TrainConfig, train: Split) -> None:
    """Refuse settings that mean nothing for the task, before any work: class weights and an
    accuracy to watch need class ids, not a regression's scores."""
    if not train.regression:
        return
    if cfg.class_weight != "none":
        raise ValueError(f"class_weight={cfg.class_weight!r} needs class labels, but the train "
                         "split's labels are regression scores")
    if cfg.eval_every_steps and cfg.early_stopping_metric == "accuracy":
        raise ValueError("early_stopping_metric='accuracy' needs class labels, but the train "
                         "split's labels are regression scores: watch 'loss' (dev MSE)")


def sample_weights(train: Split, cfg: TrainConfig) -> np.ndarray | None:
    """Each train row's loss weight as `cfg.class_weight` says (None: all alike)."""
    return None if cfg.class_weight == "none" else balanced_weights(train.labels)


def task_loss(regression: bool) -> tuple[keras.losses.Loss, list[str]]:
    """(the loss, the metrics `fit` logs): mean squared error on the 1-unit head's output
    (Keras lines the (batch,) scores up with the (batch, 1) output), or cross-entropy on the
    logits and accuracy."""
    if regression:
        return keras.losses.MeanSquaredError(), []
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"]


def check_head(model: keras.Model, regression: bool) -> None:
    """A regression trains one output unit; a classifier one logit per class (at least 2)."""
    units = model.output_shape[-1]
    if regression != (units == 1):
        need = "a 1-unit head" if regression else "a head of one logit per class"
        raise ValueError(f"{'regression' if regression else 'class'} labels need {need}; the "
                         f"model outputs {units}")


def _callbacks(cfg: TrainConfig, work: Path, steps: int, log: Callable[[str], None],
               report: Report | None, dev: Split | None):
    """(the backup, every callback of `fit` in order): the backup restores before the others
    read the step; dev evaluation writes the logs EarlyStopping and the history read."""
    backup = SpacedBackup(str(work / "backup"), save_freq=cfg.save_every_steps,
                          min_seconds=cfg.save_min_seconds)
    callbacks: list[keras.callbacks.Callback] = [backup, StopAtStep(steps)]
    if cfg.eval_every_steps:
        if dev is None or dev.labels is None:
            raise ValueError("eval_every_steps needs a labeled dev split")
        callbacks.append(DevEvaluation(dev, log))
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=f"val_{cfg.early_stopping_metric}", min_delta=cfg.early_stopping_min_delta,
            patience=cfg.early_stopping_patience or steps,  # None: never stop, maybe restore
            mode="min" if cfg.early_stopping_metric == "loss" else "max",
            restore_best_weights=cfg.restore_best))
    callbacks += [StepHistory(work / "history.jsonl", log),
                  TrainingProgress(steps, cfg.batch_size, log, report)]
    return backup, callbacks


def read_history(path: Path, batch_size: int, seconds: float) -> dict:
    """The JSON-lines log as history.json. A step logged twice (redone after a resume) keeps its
    last value; `resumed_from_step` is the step of the last resume (None if never killed);
    `evaluations` holds the dev loss (and a classifier's accuracy) of each periodic evaluation,
    and `epochs` the end-of-epoch means when there were none."""
    steps, ends, resumed = {}, {}, None
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "resumed_from_step" in record:
            resumed = record["resumed_from_step"]
        elif "epoch" in record:
            ends[record["step"]] = record
        else:
            steps[record["step"]] = record
    ordered = [steps[s] for s in sorted(steps)]
    ends_ordered = [ends[s] for s in sorted(ends)]
    evaluations = [{"step": e["step"], **{k[len("val_"):]: v for k, v in e.items()
                                          if k.startswith("val_")}}
                   for e in ends_ordered if "val_loss" in e]
    return {"steps": [r["step"] for r in ordered], "loss": [r["loss"] for r in ordered],
            "learning_rate": [r["learning_rate"] for r in ordered],
            "epochs": [] if evaluations else ends_ordered, "evaluations": evaluations,
            "resumed_from_step": resumed,
            "examples_per_second": (len(ordered) - (resumed or 0)) * batch_size
            / max(seconds, 1e-9)}  # `seconds` counts this process's steps only

