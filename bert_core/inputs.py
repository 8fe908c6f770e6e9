"""Training and evaluation input from the Parquet shards, with no TensorFlow: numpy batches that
every Keras backend trains on.

run_classifier's training input is `TFRecordDataset -> repeat -> shuffle(100) -> batch(drop
remainder)`. `TrainBatches` is that pipeline as a plan computed up front: the rows of train in
file order, repeated, through a shuffle buffer of the same size (draw a random slot, emit it,
refill it with the next row; numpy's PCG64 seeded with the run's seed), cut into full batches.
Each batch is then padded as `padding` says, or the rows are grouped by length first (`bounds`,
as tf.data's bucket_by_sequence_length: a row of length n joins the first bound >= n, a bucket
is emitted when it holds a batch). Batch i is a pure function of the seed, so a resumed run
continues with exactly the batches it would have seen, on either backend.

A split is held in memory as three int32 arrays (n, max_seq_length): 1.5 KB a row at 128, e.g.
600 MB for MNLI's 393k training pairs. Labels are int32 class ids, or float32 scores when the
manifest says the task is a regression (STS-B).

With per-row `weights` (`balanced_weights`: CoLA's 70/30 classes weighted alike) each batch is
Keras' `(features, labels, sample_weights)`, else `(features, labels)`.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bert_core.features import FEATURE_NAMES, Features

# (features cut to the batch's width, labels[, sample weights]): what Keras' `fit` reads
Batch = tuple[dict[str, np.ndarray], np.ndarray] | tuple[dict[str, np.ndarray], np.ndarray,
                                                         np.ndarray]


@dataclass(frozen=True)
class Split:
    """One split of the shards: its features, labels (None when unlabeled) and example ids.
    Float labels are a regression task's scores, integer ones class ids."""

    features: Features
    labels: np.ndarray | None
    guids: list[str]

    @property
    def regression(self) -> bool:
        """Whether the labels are scores (float) rather than class ids."""
        return self.labels is not None and self.labels.dtype.kind == "f"

    @property
    def lengths(self) -> np.ndarray:
        """Real tokens per row (the attention mask's ones)."""
        return self.features.input_mask.sum(axis=1)


def read_split(shard_dir: str | Path, split: str) -> Split:
    """Every shard of `split` listed in `shard_dir`/manifest.json, in order; the labels float32
    when the manifest says `regression`, else int32."""
    shard_dir = Path(shard_dir)
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    entry, width = manifest["splits"][split], manifest["max_seq_length"]
    shards = [read_shard(shard_dir / s["parquet"]) for s in entry["shards"]]
    shards = [(features, table) for features, table in shards if table.num_rows]
    columns = [np.concatenate([getattr(f, name) for f, _ in shards]) if shards
               else np.zeros((0, width), np.int32) for name in FEATURE_NAMES]
    labels = None
    if entry["labeled"]:
        labels = np.concatenate([t["label"].to_numpy() for _, t in shards] or [np.zeros(0)])
        labels = labels.astype(np.float32 if manifest.get("regression") else np.int32)
    guids = [g for _, t in shards for g in t["guid"].to_pylist()]
    return Split(Features(*columns), labels, guids)


def read_shard(path: str | Path) -> tuple[Features, pa.Table]:
    """A Parquet shard back as `Features` (and the table, for labels and guids)."""
    table = pq.read_table(path)
    rows = table.num_rows

    def column(name):
        flat = table.column(name).combine_chunks().flatten().to_numpy()
        return flat.reshape(rows, -1) if rows else flat.reshape(0, 0)

    return Features(*(column(name) for name in FEATURE_NAMES)), table


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Each row's weight n_samples / (n_classes * count of its class), sklearn's
    compute_class_weight("balanced"): every class weighs as much in the loss, and the weights
    average 1.

    >>> balanced_weights(np.array([0, 0, 0, 1])).tolist()
    [0.6666666865348816, 0.6666666865348816, 0.6666666865348816, 2.0]
    """
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return (len(labels) / (len(counts) * counts))[inverse].astype(np.float32)


def shuffled_rows(n: int, count: int, buffer: int, seed: int) -> np.ndarray:
    """The first `count` rows out of `repeat -> shuffle(buffer)` over rows 0..n-1.

    >>> shuffled_rows(5, 10, 1, 0).tolist()  # a buffer of one shuffles nothing
    [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    >>> int(shuffled_rows(1000, 1, 100, 3)[0]) < 100  # the first row comes from the first 100
    True
    """
    rng = np.random.default_rng(seed)
    buffer = max(1, min(buffer, n))
    slots = list(range(buffer))
    upcoming = buffer
    picks = rng.integers(0, buffer, size=count)  # the buffer stays full: one draw per output
    out = np.empty(count, np.int64)
    for i, slot in enumerate(picks):
        out[i] = slots[slot]
        slots[slot] = upcoming % n
        upcoming += 1
    return out


class TrainBatches:
    """run_classifier's training batches over `split` (see the module docstring); `steps` of
    them, each of `batch_size` rows, split into `accumulate` equal micro-batches; with
    `weights` (one per row of `split`), each micro-batch carries its rows' weights."""

    def __init__(self, split: Split, steps: int, batch_size: int, seed: int, buffer: int = 100,
                 padding: str = "dynamic", bounds: tuple[int, ...] = (), multiple: int = 1,
                 accumulate: int = 1, weights: np.ndarray | None = None):
        if batch_size % accumulate:
            raise ValueError(f"batch size {batch_size} is not a multiple of accumulate_steps "
                             f"{accumulate}")
        self.split, self.steps, self.batch_size, self.weights = split, steps, batch_size, weights
        self.padding, self.multiple, self.accumulate = padding, multiple, accumulate
        n, self.max_width = split.features.input_ids.shape
        if bounds:
            self.plan = self._bucketed(shuffled_rows(n, steps * batch_size * 4 + n, buffer, seed),
                                       bounds)
        else:
            rows = shuffled_rows(n, steps * batch_size, buffer, seed).reshape(steps, batch_size)
            self.plan = [(r, self._width(r)) for r in rows]

    def _width(self, rows: np.ndarray) -> int:
        if self.padding == "max_length":
            return self.max_width
        longest = max(int(self.split.lengths[rows].max()), 1)
        return min(-(-longest // self.multiple) * self.multiple, self.max_width)

    def _bucketed(self, stream: np.ndarray, bounds: tuple[int, ...]):
        """Full batches of rows of similar length, each padded to its bucket's bound."""
        edges = sorted({b for b in bounds if b < self.max_width}) + [self.max_width]
        buckets: list[list[int]] = [[] for _ in edges]
        which = np.searchsorted(edges, self.split.lengths[stream], side="left")
        plan = []
        for row, b in zip(stream.tolist(), which.tolist()):
            buckets[b].append(row)
            if len(buckets[b]) == self.batch_size:
                plan.append((np.array(buckets[b]), edges[b]))
                buckets[b] = []
                if len(plan) == self.steps:
                    return plan
        raise ValueError(f"{len(plan)} of {self.steps} bucketed batches from {len(stream)} rows")

    @property
    def widths(self) -> list[int]:
        return [width for _, width in self.plan]

    def batch(self, step: int) -> list[Batch]:
        """The micro-batches of optimizer step `step` (0-based), each cut to the step's width
        (with `padding="dynamic"`, to its own longest row)."""
        rows, width = self.plan[step]
        out = []
        for part in np.split(rows, self.accumulate):
            cut = width if self.padding != "dynamic" or self.accumulate == 1 else self._width(part)
            features = {name: values[part, :cut]
                        for name, values in self.split.features.as_dict().items()}
            labels = self.split.labels[part]
            out.append((features, labels) if self.weights is None
                       else (features, labels, self.weights[part]))
        return out

    def iterate(self, start: int = 0, prefetch: int = 2) -> Iterator[Batch]:
        """Micro-batches from optimizer step `start` to the end, assembled `prefetch` ahead on
        a background thread."""
        ready: queue.Queue = queue.Queue(maxsize=prefetch)
        stop = threading.Event()

        def fill():
            for step in range(start, self.steps):
                for micro in self.batch(step):
                    while not stop.is_set():
                        try:
                            ready.put(micro, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            ready.put(None)

        thread = threading.Thread(target=fill, name="train-batches", daemon=True)
        thread.start()
        try:
            while (item := ready.get()) is not None:
                yield item
        finally:
            stop.set()
