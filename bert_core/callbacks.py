"""The fine-tune's Keras callbacks: exact step counts across resumes, backups with a bounded
cost (public Keras API only), dev evaluation during training, a per-step history that survives a
kill, and progress a person can follow (log lines, a terminal bar, a `Report` such as the
Prefect UI's).

With gradient accumulation Keras calls the batch hooks once per micro-batch; what these do per
optimizer update happens once, at the micro-batch that completes the update."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import keras
import numpy as np
from scipy.special import logsumexp

from bert_core.inputs import Split
from bert_core.predict import predict_logits
from bert_core.progress import Meter, Report, bar, progress_line

logger = logging.getLogger(__name__)


def optimizer_step(model: keras.Model) -> int:
    """Optimizer updates so far (with accumulation: completed updates, not micro-batches)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class _PerUpdate(keras.callbacks.Callback):
    _last_step: int | None = None  # set by each subclass's on_train_begin

    def new_step(self) -> int | None:
        """The step after this micro-batch, if it completed an update; else None."""
        step = optimizer_step(self.model)
        if step == self._last_step:
            return None
        self._last_step = step
        return step


class StopAtStep(keras.callbacks.Callback):
    """End training after exactly `steps` optimizer updates, counting those before a resume."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch, logs=None):
        if optimizer_step(self.model) >= self.steps:
            self.model.stop_training = True


class SpacedBackup(_PerUpdate):
    """Keras' BackupAndRestore, with public Keras API only: a backup every `save_freq` optimizer
    steps (counted over the whole run, resumes included), skipped while fewer than `min_seconds`
    have passed since the last one; `on_train_begin` restores the newest backup, so a run killed
    mid-training resumes from it. A backup holds the weights and both AdamW moments (and the step
    counter): for MiniLM-L3 ~200 MB and ~3 s on the 2-core bench machine, so one every 50 steps
    cost 7% of the real MRPC fine-tune; at most one per 120 s costs under 3%, and a kill loses at
    most ~2 min.

    Each backup is written under a temporary name and renamed to `step-<n>.weights.h5`, so a
    kill mid-write leaves the previous one whole; the two newest are kept (the older one is
    loaded if the newest cannot be). `latest_step()` reads the step from the name without loading
    anything, so the caller can tell `fit` the epoch to resume at (`initial_epoch`)."""

    PATTERN = "step-*.weights.h5"

    def __init__(self, backup_dir: str, save_freq: int, min_seconds: float,
                 delete_checkpoint: bool = True, keep: int = 2):
        super().__init__()
        self.backup_dir, self.save_freq, self.min_seconds = Path(backup_dir), save_freq, min_seconds
        self.delete_checkpoint, self.keep = delete_checkpoint, keep

    def backups(self) -> list[Path]:
        """Backups on disk, newest first."""
        return sorted(self.backup_dir.glob(self.PATTERN), key=_step_of, reverse=True)

    def latest_step(self) -> int:
        """The optimizer step of the newest backup (0 when there is none)."""
        return next((_step_of(path) for path in self.backups()), 0)

    def on_train_begin(self, logs=None):
        self.last_saved = time.monotonic()
        self._restore()
        self._last_step = optimizer_step(self.model)

    def _restore(self) -> None:
        backups = self.backups()
        if not backups:
            return
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)  # its moments must exist to load
        for i, path in enumerate(backups):
            try:
                self.model.load_weights(path)
                return
            except (OSError, ValueError) as error:  # unreadable: fall back to the one before
                if i == len(backups) - 1:
                    raise
                logger.warning("backup %s cannot be read (%s); trying the one before", path, error)

    def on_train_batch_end(self, batch, logs=None):
        step = self.new_step()
        if step is None:
            return
        if step % self.save_freq == 0 and time.monotonic() - self.last_saved >= self.min_seconds:
            self.save(step)
            self.last_saved = time.monotonic()

    def save(self, step: int) -> Path:
        """Write the backup of `step`, then drop all but the `keep` newest."""
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        partial = self.backup_dir / "partial.weights.h5"  # Keras wants the .weights.h5 suffix
        self.model.save_weights(partial, overwrite=True)
        path = self.backup_dir / f"step-{step:09d}.weights.h5"
        os.replace(partial, path)
        for old in self.backups()[self.keep:]:
            old.unlink()
        return path

    def on_train_end(self, logs=None):
        if self.delete_checkpoint:
            shutil.rmtree(self.backup_dir, ignore_errors=True)


def _step_of(path: Path) -> int:
    return int(path.name.split("-")[1].split(".")[0])


class StepHistory(_PerUpdate):
    """Per-step loss and learning rate, appended to a JSON-lines file that survives a kill."""

    def __init__(self, path: Path, log: Callable[[str], None]):
        super().__init__()
        self.path, self.log = path, log

    def on_train_begin(self, logs=None):
        start_step = self._last_step = optimizer_step(self.model)
        if start_step:  # SpacedBackup (called before us) restored a killed run
            self._append({"resumed_from_step": start_step})
            self.log(f"resumed from the backup at step {start_step}")

    def _append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_batch_begin(self, batch, logs=None):
        self.learning_rate = next_learning_rate(self.model)

    def on_train_batch_end(self, batch, logs=None):
        if (step := self.new_step()) is None:
            return
        self._append({"step": step, "loss": float(logs["loss"]),
                      "learning_rate": self.learning_rate})

    def on_epoch_end(self, epoch, logs=None):
        step = optimizer_step(self.model)
        self._append({"epoch": epoch + 1, "step": step, **{k: float(v) for k, v in logs.items()}})


class DevEvaluation(keras.callbacks.Callback):
    """At each epoch's end (with `eval_every_steps`, an epoch is that many steps): the dev
    split's `dev_scores`, added to the epoch's logs as `val_loss` (and `val_accuracy` for a
    classifier) for the callbacks after it (EarlyStopping, StepHistory), and logged."""

    def __init__(self, dev: Split, log: Callable[[str], None], batch_size: int = 64):
        super().__init__()
        self.dev, self.log, self.batch_size = dev, log, batch_size

    def on_epoch_end(self, epoch, logs=None):
        logits = predict_logits(self.model, self.dev.features, self.batch_size)
        scores = dev_scores(logits, self.dev.labels)
        if logs is not None:
            logs.update({f"val_{name}": value for name, value in scores.items()})
        self.log(f"step {optimizer_step(self.model)}: dev "
                 + ", ".join(f"{name} {value:.4f}" for name, value in scores.items()))


def dev_scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The training loss on a labeled split, in float64: mean cross-entropy and accuracy for
    class ids, mean squared error for float scores (a 1-unit head's outputs, no accuracy).

    >>> scores = dev_scores(np.array([[0.0, 0.0], [2.0, 0.0]]), np.array([1, 0]))
    >>> {name: round(value, 4) for name, value in scores.items()}  # (ln 2 + ln(1 + e^-2)) / 2
    {'loss': 0.41, 'accuracy': 0.5}
    >>> dev_scores(np.array([[1.0], [3.0]]), np.array([2.0, 3.0], np.float32))
    {'loss': 0.5}
    """
    logits = logits.astype(np.float64)
    if labels.dtype.kind == "f":
        return {"loss": float(np.mean((logits[:, 0] - labels) ** 2))}
    loss = np.mean(logsumexp(logits, axis=1) - logits[np.arange(len(labels)), labels])
    return {"loss": float(loss), "accuracy": float(np.mean(logits.argmax(axis=1) == labels))}


def next_learning_rate(model: keras.Model) -> float:
    """The learning rate the coming step's update uses (the schedule at the iteration count
    before it)."""
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class TrainingProgress(_PerUpdate):
    """What a person watching a fine-tune sees. Every `every` steps and at the last:

        step 150/343 (44%), loss 0.6123, lr 1.23e-05, 55.1 examples/s, ETA 3m30s

    as a `log` line, and `report(percent, line)` (the task's Prefect progress artifact) when
    given. On a terminal (`stream`, default stderr when it is a TTY) a bar redrawn every step.
    The speed is that of the steps since the previous line; the time left assumes it holds."""

    def __init__(self, total_steps: int, batch_size: int, log: Callable[[str], None],
                 report: Report | None = None, every: int = 10, stream: TextIO | None = None):
        super().__init__()
        self.total, self.batch_size, self.log, self.report = total_steps, batch_size, log, report
        self.every = every
        self.stream = stream if stream is not None else (sys.stderr if sys.stderr.isatty()
                                                         else None)

    def on_train_begin(self, logs=None):
        self._last_step = optimizer_step(self.model)
        self.meter = Meter(self.total, self._last_step)

    def on_train_batch_begin(self, batch, logs=None):
        self.learning_rate = next_learning_rate(self.model)

    def on_train_batch_end(self, batch, logs=None):
        if (step := self.new_step()) is None:
            return
        values = f"loss {float(logs['loss']):.4f}, lr {self.learning_rate:.3g}"
        due = step % self.every == 0 or step >= self.total
        rate, eta = self.meter.read(step) if due else self.meter.peek(step)  # the window so far
        line = progress_line("step", step, self.total, rate * self.batch_size, eta, "examples/s",
                             values)
        if due:
            self._draw("")  # the log line goes where the bar was
            self.log(line)
            if self.report:
                self.report(100 * step / self.total, line)
        self._draw(f"{bar(step, self.total)} {line}")

    def _draw(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()

    def on_train_end(self, logs=None):
        if self.stream is not None:
            self.stream.write("\n")
            self.stream.flush()
