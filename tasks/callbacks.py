"""The train stage's Keras callbacks: exact step counts across resumes, backups with a bounded
cost, and a per-step history that survives a kill."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import keras


class StopAtStep(keras.callbacks.Callback):
    """End training after exactly `steps` optimizer updates, counting those before a resume."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.steps:
            self.model.stop_training = True


class SpacedBackup(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore every `save_freq` steps, skipping a due backup until `min_seconds`
    have passed since the last one. A backup holds the weights and both AdamW moments: for
    MiniLM-L3 ~200 MB and ~3 s on the 2-core bench machine, so one every 50 steps cost 7% of the
    real MRPC fine-tune; at most one per 120 s costs under 3%, and a kill loses at most ~2 min."""

    def __init__(self, backup_dir: str, save_freq: int, min_seconds: float, **kwargs):
        super().__init__(backup_dir, save_freq=save_freq, **kwargs)
        self.min_seconds = min_seconds

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.last_saved = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        # _should_save_on_batch also tracks the batch the resume metadata records: always call it.
        due = self._should_save_on_batch(batch)
        if due and time.monotonic() - self.last_saved >= self.min_seconds:
            self._save_model()
            self.last_saved = time.monotonic()


class StepHistory(keras.callbacks.Callback):
    """Per-step loss and learning rate, appended to a JSON-lines file that survives a kill."""

    def __init__(self, path: Path, batch_size: int, log: Callable[[str], None], every: int = 10):
        super().__init__()
        self.path, self.batch_size, self.log, self.every = path, batch_size, log, every

    def on_train_begin(self, logs=None):
        self.start_step = int(self.model.optimizer.iterations.numpy())
        self.start = time.perf_counter()
        if self.start_step:  # BackupAndRestore (called before us) restored a killed run
            self._append({"resumed_from_step": self.start_step})
            self.log(f"resumed from the backup at step {self.start_step}")

    def _append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_batch_begin(self, batch, logs=None):
        # The learning rate this step's update uses (the schedule at the iteration count before it).
        self.learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_batch_end(self, batch, logs=None):
        step, lr = int(self.model.optimizer.iterations.numpy()), self.learning_rate
        record = {"step": step, "loss": float(logs["loss"]), "learning_rate": lr}
        self._append(record)
        if step % self.every == 0:
            rate = (step - self.start_step) * self.batch_size / (time.perf_counter() - self.start)
            self.log(f"step {step}: loss {record['loss']:.4f}, lr {lr:.3g}, {rate:.1f} examples/s")

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        self._append({"epoch": epoch + 1, "step": step, **{k: float(v) for k, v in logs.items()}})
