"""Tokenized shards: one split cut into shards, each written as Parquet and as TFRecord.

Pure functions (no Prefect) so that worker processes start light. A shard is written whole into the
caller's folder, which the caller publishes by renaming; readers never see half a shard.

    Parquet  input_ids, input_mask, segment_ids: list<int32>; label: int32 class id, or float32
             score for a regression task (null when unlabeled); guid: string; is_real_example: int32
    TFRecord tf.train.Example with int64 input_ids, input_mask, segment_ids, label_ids,
             is_real_example (run_classifier's layout; unlabeled rows get label_ids 0 as there);
             a regression task's label_ids is a float_list

A single-sentence task (CoLA, SST-2) has no `texts_b`: its rows pack as [CLS] a [SEP].
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bert_core.features import Features, encode_pairs
from bert_core.records import tfrecord_bytes
from bert_core.tokenization import FullTokenizer


@dataclass(frozen=True)
class ShardJob:
    split: str
    index: int
    count: int
    guids: list[str]
    texts_a: list[str]
    texts_b: list[str] | None  # None for a single-sentence task
    labels: list[int] | list[float] | None  # class ids or scores; None for an unlabeled split
    vocab_file: str
    do_lower_case: bool
    max_seq_length: int
    out_dir: str
    regression: bool = False  # labels are scores: written as float32 (also when unlabeled)

    def __post_init__(self):
        # pyarrow would write a score of 3.8 to an int32 column as 3, without a word
        labels = [] if self.labels is None else self.labels
        if not self.regression and any(isinstance(v, float) for v in labels):
            raise ValueError(f"{self.stem}: float labels (scores) need regression=True")

    @property
    def stem(self) -> str:
        return f"{self.split}-{self.index:05d}-of-{self.count:05d}"


@dataclass(frozen=True)
class ShardInfo:
    split: str
    index: int
    rows: int
    parquet: str
    parquet_sha256: str
    tfrecord: str
    tfrecord_sha256: str


@lru_cache(maxsize=4)
def _tokenizer(vocab_file: str, do_lower_case: bool) -> FullTokenizer:
    """One tokenizer per process, so its word cache serves every shard the process writes."""
    return FullTokenizer(vocab_file, do_lower_case=do_lower_case)


def plan_shards(split: str, guids: list[str], texts_a: list[str], texts_b: list[str] | None,
                labels: list[int] | list[float] | None, shard_size: int,
                **common) -> list[ShardJob]:
    """Cut one split into jobs of `shard_size` rows (at least one job, even for an empty split);
    `common` holds the ShardJob fields every job shares (`regression=True` for scores)."""
    count = max(1, -(-len(guids) // shard_size))
    jobs = []
    for index in range(count):
        rows = slice(index * shard_size, (index + 1) * shard_size)
        jobs.append(ShardJob(split, index, count, guids[rows], texts_a[rows],
                             None if texts_b is None else texts_b[rows],
                             None if labels is None else labels[rows], **common))
    return jobs


def write_shard(job: ShardJob) -> ShardInfo:
    """Tokenize one shard and write its Parquet and TFRecord files into `job.out_dir`."""
    tokenizer = _tokenizer(job.vocab_file, job.do_lower_case)
    features = encode_pairs(tokenizer, job.texts_a, job.texts_b, job.max_seq_length)
    out = Path(job.out_dir)
    parquet = out / f"{job.stem}.parquet"
    tfrecord = out / f"{job.stem}.tfrecord"
    pq.write_table(_arrow_table(job, features), parquet, compression="zstd")
    dtype = np.float32 if job.regression else np.int64  # float32: a float_list in the TFRecord
    labels = np.zeros(len(job.guids), dtype) if job.labels is None else np.array(job.labels, dtype)
    tfrecord.write_bytes(tfrecord_bytes({**features.as_dict(), "label_ids": labels,
                                         "is_real_example": np.ones(len(job.guids), np.int64)}))
    return ShardInfo(job.split, job.index, len(job.guids), parquet.name, _sha256(parquet),
                     tfrecord.name, _sha256(tfrecord))


def _list_column(values: np.ndarray) -> pa.ListArray:
    rows, width = values.shape
    offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), pa.int32()))


def _arrow_table(job: ShardJob, features: Features) -> pa.Table:
    rows = len(job.guids)
    return pa.table({
        "input_ids": _list_column(features.input_ids),
        "input_mask": _list_column(features.input_mask),
        "segment_ids": _list_column(features.segment_ids),
        "label": pa.array(job.labels if job.labels is not None else [None] * rows,
                          pa.float32() if job.regression else pa.int32()),
        "guid": pa.array(job.guids, pa.string()),
        "is_real_example": pa.array(np.ones(rows, np.int32)),
    })


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
