"""Validate stage: the data contracts (data_contracts/) on the raw files and on the tokenized shards.

Every expectation's outcome is published as a Prefect table artifact first; then the first broken
contract raises `ContractViolation`, which stops the flow before anything downstream is written.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from bert_core.tokenization import load_vocab
from data_contracts.examples import validate_examples
from data_contracts.reader import read_tsv
from data_contracts.specs import TaskConfig, TaskSpec, task_spec
from data_contracts.validate import (ValidationReport, mrpc_pairs, validate_mrpc_split,
                                     validate_shard_frame)
from tasks.atomic import write_json
from tasks.caching import cached
from tasks.config import DataConfig
from tasks.records import RawData, TaskData
from data_contracts.specs.msr import SPLITS


def validate_raw_splits(raw: TaskData, data: DataConfig,
                        task: TaskConfig = TaskConfig()) -> list[ValidationReport]:
    """Each of the task's files against its contract: MRPC's own suites (dev shares no pair with
    train), any other task's examples suite (dev shares few examples with train)."""
    spec = task_spec(task)
    if spec.name == "mrpc":
        return _validate_mrpc(raw, spec, data)
    frames = spec.read_all(Path(raw.data_dir))
    labels = spec.label_names(frames["train"])
    return [validate_examples(frames[s.name], file=str(raw.file(s.file)), spec=spec, split=s.name,
                              labels=labels, bounds=data.row_bounds.of(spec, s.name),
                              train=None if s.role == "train" else frames["train"])
            for s in spec.splits]


def _validate_mrpc(raw: TaskData, spec: TaskSpec, data: DataConfig) -> list[ValidationReport]:
    train_pairs = mrpc_pairs(read_tsv(raw.file("train.tsv")))
    reports = []
    for split in SPLITS:
        low, high = data.row_bounds.of(spec, split)
        reports.append(validate_mrpc_split(
            raw.file(f"{split}.tsv"), split, min_rows=low, max_rows=high,
            train_pairs=train_pairs if split == "dev" else None))
    return reports


def validate_shard_splits(shard_dir: Path, raw: RawData) -> list[ValidationReport]:
    """Each split's shards in `shard_dir`, read back from Parquet, against the shard suite; row
    counts against the examples the manifest says they came from."""
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    vocab = load_vocab(raw.vocab_file)
    labels = None if manifest["regression"] else tuple(range(len(manifest["labels"])))
    reports = []
    for split, entry in manifest["splits"].items():
        files = [shard_dir / s["parquet"] for s in entry["shards"]]
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        reports.append(validate_shard_frame(
            frame, file=f"{shard_dir.name}/{split}-*.parquet",
            max_seq_length=manifest["max_seq_length"], vocab_size=manifest["vocab_size"],
            cls_id=vocab["[CLS]"], sep_id=vocab["[SEP]"], label_set=labels,
            expected_rows=entry["examples"], labeled=entry["labeled"], pair=manifest["pair"]))
    return reports


def publish(reports: list[ValidationReport], key: str) -> list[dict]:
    """One table artifact with every expectation of every file; then raise on the first failure.
    Returns the table."""
    rows = [{"file": Path(r.file).name, "rows": r.rows, **row} for r in reports for row in r.table()]
    failed = sum(not r.success for r in reports)
    create_table_artifact(key=key, table=rows,
                          description=f"{len(reports)} files, {failed} broke their contract")
    get_run_logger().info("%s: %d expectations, %d files failed", key, len(rows), failed)
    for report in reports:
        report.raise_for_failures()
    return rows


def report_written(path: str) -> str | None:
    """A cached validation is usable while its report is where the model's lineage points."""
    return None if Path(path).is_file() else f"{path} is missing"


# The suites are Great Expectations' and read through pandas; where the files came from and how
# they were fetched cannot change the verdict on their content.
LIBRARIES = ("great-expectations", "pandas")
UNUSED = (*DataConfig.SOURCES, *DataConfig.TRANSPORT, "shard_size")


@task(name="validate", **cached("validate", __name__, LIBRARIES, ignore={"data": UNUSED},
                                checks=(report_written,)))
def validate(raw: TaskData, task: TaskConfig, data: DataConfig, home: str) -> str:
    """The task's raw files keep their contract (columns, labels, texts, duplicates, row counts).
    Returns the path of the validation report (JSON), kept for the model's lineage."""
    rows = publish(validate_raw_splits(raw, data, task), key=f"{task.name}-validation")
    contents = [d[:8] for name, d in raw.sha256.items() if name != "checkpoint"]
    key = "-".join([*contents, hashlib.sha256(task.model_dump_json().encode()).hexdigest()[:8]])
    return str(write_json(Path(home) / "reports" / "validation" / f"{key}.json", rows))
