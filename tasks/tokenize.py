"""Tokenize stage: a task's examples -> Parquet + TFRecord shards and a manifest, in a folder named
by its inputs (file and vocab hashes, the task's mapping, the tokenization config, the shards).

Shards are written by a pool of processes (or, from a flow body, as one Prefect task each on the
flow's task runner: `run_as_tasks`) into a temporary folder that is renamed into place once
the manifest is written, so a reader finds either every shard of a run or none. The output is
byte-identical from run to run.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from bert_core.tokenization import load_vocab
from data_contracts.specs import SplitSpec, TaskConfig, TaskSpec, task_spec
from tasks.atomic import publish_dir, write_json
from tasks.caching import cached, content_key, refreshing
from tasks.config import DataConfig, ModelConfig
from tasks.records import RawData, Shards, TaskData
from tasks.fingerprint import sealed_files, sha256_file, unsealed
from bert_core.progress import Meter, progress_line
from tasks.progress import run_log
from tasks.shards import ShardInfo, ShardJob, plan_shards, write_shard
from tasks.validate import publish, validate_shard_splits

# What shapes the bytes written besides our own code (pyarrow writes the Parquet files).
LIBRARIES = ("numpy", "pyarrow", "google-crc32c")
# Settings that cannot change the shards: where the files came from (their content is in `raw`),
# how they are checked, fetched, and how many processes write them.
UNUSED = (*DataConfig.SOURCES, *DataConfig.TRANSPORT, "row_bounds")
# One process tokenizes ~20k MRPC pairs/s; starting workers costs ~1.3 s (measured here, 2 cores),
# so a pool pays off only past ~50k pairs. See bench/tokenization.py.
PARALLEL_MIN_ROWS = 50_000
PROGRESS_MIN_ROWS = 20_000  # MRPC's 5,801 pairs take a second: no progress lines for them
logger = logging.getLogger(__name__)
# Writes every shard of a list of jobs (given a worker count) and returns their infos in job order.
JobRunner = Callable[[list[ShardJob], int], list[ShardInfo]]


def shard_key(raw: RawData, task: TaskConfig, data: DataConfig, model: ModelConfig,
              vocab_sha256: str) -> str:
    """The shard folder's name: the tokenize stage's code and libraries, and what the shards
    are made of by content (the task's files and how they map onto examples, the vocab, the
    settings that shape them), so that the same data gives the same name in any home."""
    files = {name: digest for name, digest in raw.sha256.items() if name != "checkpoint"}
    return content_key("tokenize", __name__, LIBRARIES,
                       {"files": files, "task": task, "vocab": vocab_sha256, "model": model,
                        "data": data}, {"data": UNUSED})


def task_examples(raw: TaskData, task: TaskConfig) -> tuple[TaskSpec, dict[str, pd.DataFrame],
                                                          tuple[str, ...]]:
    """The task's spec, every split's examples and the label names (in logit order)."""
    spec = task_spec(task)
    frames = spec.read_all(Path(raw.data_dir))
    return spec, frames, spec.label_names(frames["train"])


def split_jobs(frame: pd.DataFrame, split: SplitSpec, labels: tuple[str, ...],
               raw: RawData, data: DataConfig, model: ModelConfig,
               out_dir: Path) -> list[ShardJob]:
    """run_classifier's examples of one split as shard jobs: label names mapped to their index
    in `labels`, scores kept as floats (regression: `labels` empty), none for a test split."""
    values = None
    if split.labeled:
        label_id = {label: i for i, label in enumerate(labels)}
        values = ([float(v) for v in frame["label"]] if not labels
                  else [label_id[v] for v in frame["label"]])
    pair = frame["text_b"].notna().any()
    return plan_shards(split.name, frame["guid"].tolist(), frame["text_a"].tolist(),
                       frame["text_b"].tolist() if pair else None, values, data.shard_size,
                       vocab_file=raw.vocab_file, do_lower_case=model.do_lower_case,
                       max_seq_length=model.max_seq_length, out_dir=str(out_dir),
                       regression=not labels)


def run_jobs(jobs: list[ShardJob], workers: int,
             min_rows: int = PARALLEL_MIN_ROWS,
             progress_rows: int = PROGRESS_MIN_ROWS) -> list[ShardInfo]:
    """Write every shard; in worker processes only when the input pays for their ~1 s start.
    An input of `progress_rows` pairs or more logs each shard written, with pairs/s and the time
    left."""
    rows = sum(len(j.guids) for j in jobs)
    track = _progress(rows) if rows >= progress_rows else lambda info: info
    if workers <= 1 or len(jobs) <= 1 or rows < min_rows:
        return [track(write_shard(job)) for job in jobs]
    # spawn, not fork: the parent may hold TensorFlow's threads and locks.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        return [track(info) for info in pool.map(write_shard, jobs)]


def _progress(total: int) -> Callable[[ShardInfo], ShardInfo]:
    """Logs 'tokenized 40960/100000 (41%), 15497.0 pairs/s, ETA 4s' as each shard is written."""
    meter, log, done = Meter(total), run_log(logger), [0]

    def track(info: ShardInfo) -> ShardInfo:
        done[0] += info.rows
        log(progress_line("tokenized", done[0], total, *meter.read(done[0]), "pairs/s"))
        return info
    return track


# Never cached: a shard is written into a fresh temp folder, so only running it writes the file.
write_shard_task = task(write_shard, name="write-shard", task_run_name="write-shard-{job.stem}",
                        cache_policy=NO_CACHE, persist_result=False)


def run_as_tasks(jobs: list[ShardJob], workers: int = 0) -> list[ShardInfo]:
    """A JobRunner for a flow body: one Prefect task per shard on the flow's task runner (threads,
    or a Dask cluster with prefect-dask's DaskTaskRunner), results in job order. `workers` is the
    task runner's business and ignored here."""
    return write_shard_task.map(jobs).result()


def tokenize_splits(raw: RawData, data: DataConfig, model: ModelConfig, home: Path,
                    check: Callable[[Path], None] | None = None,
                    run: JobRunner = run_jobs, refresh: bool = False,
                    task: TaskConfig = TaskConfig()) -> Shards:
    """Write the shards with `run`, unless an intact folder of these inputs exists (or always,
    with `refresh`); `check` sees the finished folder before it is published and may raise to
    keep it from ever being seen."""
    vocab_sha = sha256_file(raw.vocab_file)
    out = home / "shards" / shard_key(raw, task, data, model, vocab_sha)
    if refresh or unsealed(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            spec, frames, labels = task_examples(raw, task)
            jobs = [job for split in spec.splits for job in
                    split_jobs(frames[split.name], split, labels, raw, data, model, tmp)]
            infos = run(jobs, data.workers)
            write_json(tmp / "manifest.json", _manifest(spec, frames, labels, raw, data, model,
                                                        vocab_sha, infos))
            if check:
                check(tmp)
            publish_dir(tmp, out, replace=refresh)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    manifest = out / "manifest.json"
    counts = {s: v["rows"] for s, v in json.loads(manifest.read_text())["splits"].items()}
    return Shards(shard_dir=str(out), manifest_sha256=sha256_file(manifest), rows=counts,
                  files=sealed_files(out))


def _manifest(spec: TaskSpec, frames: dict[str, pd.DataFrame], labels: tuple[str, ...],
              raw: RawData, data: DataConfig, model: ModelConfig, vocab_sha: str,
              infos: list[ShardInfo]) -> dict:
    """What the shards hold, for every stage after this one: the task (its labels, metric, GLUE
    submission files) and per split its role, file, examples and shards."""
    splits = {}
    for split in spec.splits:
        shards = [asdict(i) for i in infos if i.split == split.name]
        splits[split.name] = {"rows": sum(s["rows"] for s in shards), "labeled": split.labeled,
                              "role": split.role, "file": split.file,
                              "examples": len(frames[split.name]),
                              "file_sha256": raw.sha256[split.file], "shards": shards}
    return {"task": spec.name, "labels": list(labels), "regression": spec.regression,
            "pair": spec.pair, "positive": spec.positive_label(labels), "metric": spec.metric,
            "submission": dict(spec.submission), "max_seq_length": model.max_seq_length,
            "do_lower_case": model.do_lower_case,
            "vocab_sha256": vocab_sha, "vocab_size": max(load_vocab(raw.vocab_file).values()) + 1,
            "shard_size": data.shard_size, "splits": splits}


def tokenize_stage(raw: RawData, task: TaskConfig, data: DataConfig, model: ModelConfig,
                   home: str, run: JobRunner = run_jobs) -> Shards:
    """Write every split as Parquet and TFRecord shards, checked against the shard contract
    before they are published (skipped if these inputs were done). Runs in a task or a flow."""
    shards = tokenize_splits(raw, data, model, Path(home), run=run, refresh=refreshing(),
                             task=task,
                             check=lambda folder: publish(validate_shard_splits(folder, raw),
                                                          key="shard-validation"))
    create_table_artifact(
        key="tokenized-shards", description=f"Shards in {shards.shard_dir}",
        table=[{"split": s, "rows": n} for s, n in shards.rows.items()])
    get_run_logger().info("shards in %s: %s", shards.shard_dir, shards.rows)
    return shards


@task(name="tokenize", **cached("tokenize", __name__, LIBRARIES, ignore={"data": UNUSED}))
def tokenize(raw: RawData, task: TaskConfig, data: DataConfig, model: ModelConfig,
             home: str) -> Shards:
    """The tokenize stage on a local process pool, cached by its inputs."""
    return tokenize_stage(raw, task, data, model, home)
