"""Tokenized shards: layout, determinism, both formats agree, parallel equals serial."""

from __future__ import annotations

import filecmp
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bert_core.inputs import read_shard
from bert_core.records import read_records
from data_contracts.specs import TaskConfig
from tasks.config import DataConfig, ModelConfig, RowBounds
from tasks.download import download_data
from tasks.fingerprint import SEAL
from tasks.tokenize import run_jobs, split_jobs, task_examples, tokenize_splits
from tests.fixtures import write_msr_files, write_release_zip

MODEL = ModelConfig(max_seq_length=32)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    cfg = DataConfig(source=str(write_msr_files(root / "msr", train_rows=40)),
                     checkpoint=str(write_release_zip(root / "tiny.zip")),
                     row_bounds=RowBounds(train=(1, 100), dev=(1, 100), test=(1, 100)))
    return download_data(cfg, root / "home"), cfg.model_copy(update={"shard_size": 8})


def test_shards_and_manifest(raw, tmp_path):
    raw_data, cfg = raw
    shards = tokenize_splits(raw_data, cfg, MODEL, tmp_path)
    assert shards.rows == {"train": 30, "dev": 10, "test": 8}
    names = sorted(p.name for p in Path(shards.shard_dir).iterdir() if p.name != SEAL)
    assert (Path(shards.shard_dir) / SEAL).is_file()  # the stamps a cached run checks
    assert names[:4] == ["dev-00000-of-00002.parquet", "dev-00000-of-00002.tfrecord",
                         "dev-00001-of-00002.parquet", "dev-00001-of-00002.tfrecord"]
    assert "manifest.json" in names and len(names) == 2 * (2 + 1 + 4) + 1
    manifest = json.loads(shards.manifest.read_text())
    assert manifest["max_seq_length"] == 32 and manifest["labels"] == ["0", "1"]
    schema = pq.read_schema(Path(shards.shard_dir) / "train-00000-of-00004.parquet")
    for name in ("input_ids", "input_mask", "segment_ids"):
        assert str(schema.field(name).type.value_type) == "int32", name
    assert str(schema.field("label").type) == "int32" and str(schema.field("guid").type) == "string"
    assert not any(p.name.startswith(".") for p in tmp_path.glob("shards/*"))  # no temp left


def test_output_is_byte_identical_across_runs(raw, tmp_path):
    raw_data, cfg = raw
    a = Path(tokenize_splits(raw_data, cfg, MODEL, tmp_path / "a").shard_dir)
    b = Path(tokenize_splits(raw_data, cfg, MODEL, tmp_path / "b").shard_dir)
    assert a.name == b.name
    # (the seal differs: it holds each file's mtime)
    assert all(filecmp.cmp(p, b / p.name, shallow=False) for p in a.iterdir() if p.name != SEAL)


def train_jobs(raw_data, cfg, out):
    spec, frames, labels = task_examples(raw_data, TaskConfig())
    return split_jobs(frames["train"], spec.split("train"), labels, raw_data, cfg, MODEL, out)


def test_parallel_workers_write_the_same_bytes(raw, tmp_path):
    raw_data, cfg = raw
    (tmp_path / "serial").mkdir()
    (tmp_path / "parallel").mkdir()
    serial = run_jobs(train_jobs(raw_data, cfg, tmp_path / "serial"), workers=1)
    parallel = run_jobs(train_jobs(raw_data, cfg, tmp_path / "parallel"),
                        workers=2, min_rows=0)
    assert serial == parallel and len(serial) == 4


def test_tfrecord_and_parquet_hold_the_same_examples(raw, tmp_path):
    tf = pytest.importorskip("tensorflow")
    raw_data, cfg = raw
    shard = Path(tokenize_splits(raw_data, cfg, MODEL, tmp_path).shard_dir) / "test-00000-of-00001"
    features, table = read_shard(f"{shard}.parquet")
    spec = {k: tf.io.FixedLenFeature([32], tf.int64) for k in
            ("input_ids", "input_mask", "segment_ids")}
    spec |= {k: tf.io.FixedLenFeature([], tf.int64) for k in ("label_ids", "is_real_example")}
    rows = [tf.io.parse_single_example(r, spec) for r in read_records(f"{shard}.tfrecord")]
    for name in ("input_ids", "input_mask", "segment_ids"):
        np.testing.assert_array_equal(np.stack([r[name] for r in rows]), getattr(features, name))
    assert table.column("label").null_count == 8  # the test split has no labels ...
    assert [int(r["label_ids"]) for r in rows] == [0] * 8  # ... and run_classifier writes 0
    assert table.column("guid").to_pylist()[:2] == ["test-1", "test-2"]


def test_a_large_input_logs_each_shard_written_with_the_time_left(raw, tmp_path, caplog):
    raw_data, cfg = raw
    jobs = train_jobs(raw_data, cfg, tmp_path)
    with caplog.at_level(logging.INFO, logger="tasks.tokenize"):
        run_jobs(jobs, workers=1, progress_rows=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "tasks.tokenize"]
    assert len(lines) == len(jobs)
    assert lines[-1].startswith("tokenized 30/30 (100%), ") and "pairs/s, ETA" in lines[-1]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tasks.tokenize"):
        run_jobs(jobs, workers=1)  # 30 pairs: under the default threshold, silent
    assert not [r for r in caplog.records if r.name == "tasks.tokenize"]
