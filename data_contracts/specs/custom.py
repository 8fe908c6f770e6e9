"""A user's own labelled text files as a task: CSV (RFC 4180 quoting), TSV (GLUE's convention: no
quoting), JSON Lines or Parquet, with a column mapping.

    task: {name: custom, train: reviews.csv, text_a: review, label: stars}
    -> train.csv in the data folder; dev: a stratified, seeded 10% of train (no dev file given)

Labels are the names found in train, sorted, unless the config lists them; a regression task's
label is a number.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from data_contracts.errors import ContractViolation
from data_contracts.reader import decode_utf8, read_tsv, split_lines
from data_contracts.specs.config import TaskConfig
from data_contracts.specs.glue import require
from data_contracts.specs.spec import SplitSpec, TaskSpec, examples

SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".json": "jsonl",
            ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def file_format(location: str, given: str = "auto") -> str:
    """The format of a file: `given`, or read off its name (a .gz-free suffix).

    >>> file_format("https://example.org/data/train.jsonl?v=2"), file_format("a.txt", "csv")
    ('jsonl', 'csv')
    """
    if given != "auto":
        return given
    suffix = Path(location.split("?", 1)[0]).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{location}: cannot tell the format from {suffix or 'no suffix'!r}; "
                         f"give task.format (csv, tsv, jsonl or parquet)")
    return SUFFIXES[suffix]


def read_csv(path: Path) -> tuple[pd.DataFrame, list[int]]:
    """An RFC 4180 CSV (header first) as strings, and the line each row starts on. A quote left
    open, or a row wider or narrower than the header, is a read error naming its line."""
    text = decode_utf8(path.read_bytes(), str(path))
    reader = csv.reader(text.splitlines(keepends=True), strict=True)
    rows, starts, start = [], [], 1
    try:
        for row in reader:
            rows.append(row)
            starts.append(start)
            start = reader.line_num + 1
    except csv.Error as err:
        raise ContractViolation.read_error(str(path), "csv quoting", str(err),
                                           line=start) from None
    if not rows:
        raise ContractViolation.read_error(str(path), "empty file", "no header line and no rows")
    header, body = rows[0], rows[1:]
    for row, line in zip(body, starts[1:]):
        if len(row) != len(header):
            raise ContractViolation.read_error(
                str(path), "field count", f"expected {len(header)} comma-separated fields as in "
                                          f"the header, found {len(row)}", line=line)
    return pd.DataFrame(body, columns=header, dtype=str), starts[1:]


def read_jsonl(path: Path) -> tuple[pd.DataFrame, list[int]]:
    """One JSON object per line (blank lines skipped); a line that is not one is a read error."""
    records, lines = [], []
    text = decode_utf8(path.read_bytes(), str(path))
    for number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ContractViolation.read_error(str(path), "json lines", f"not JSON: {err.msg}",
                                               line=number) from None
        if not isinstance(record, dict):
            raise ContractViolation.read_error(str(path), "json lines", "expected an object, "
                                               f"got {type(record).__name__}", line=number)
        records.append(record)
        lines.append(number)
    return pd.DataFrame.from_records(records), lines


def read_table(path: Path, fmt: str) -> tuple[pd.DataFrame, list[int]]:
    """A file of any supported format as a frame and the line (the row, for Parquet) of each
    row."""
    if fmt == "csv":
        return read_csv(path)
    if fmt == "jsonl":
        return read_jsonl(path)
    if fmt == "tsv":
        frame = read_tsv(path)
        return frame, list(range(2, len(frame) + 2))
    import pyarrow.parquet as pq

    frame = pq.read_table(path).to_pandas()
    return frame, list(range(1, len(frame) + 1))


def _text(value) -> str:
    """A text cell as a string; a missing one (None, NaN) as "", which the contract rejects."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _label(value, regression: bool):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan if regression else None
    if regression:
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a label column read as floats (Parquet with nulls, JSON 1.0)
    return str(value)


def dev_rows(labels: list, fraction: float, seed: int, stratify: bool) -> np.ndarray:
    """The rows of train kept for dev: a seeded `fraction`, stratified by label when every label
    has two examples or more; sorted.

    >>> rows = dev_rows(["a"] * 8 + ["b"] * 12, 0.25, 0, True)
    >>> len(rows), int(sum(rows < 8))  # 5 of 20 rows, 2 of them of the 8 "a"s
    (5, 2)
    """
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    counts = pd.Series(labels).value_counts()
    by = labels if stratify and len(counts) > 1 and counts.min() >= 2 else None
    _, dev = train_test_split(rows, test_size=fraction, random_state=seed, stratify=by)
    return np.sort(dev)


def custom(cfg: TaskConfig) -> TaskSpec:
    """The spec of a custom task: its splits are the files given (train split for dev when none
    is)."""
    fmt = file_format(cfg.train, cfg.format)
    files = {"train": f"train.{fmt}", "dev": f"dev.{fmt}" if cfg.dev else f"train.{fmt}"}
    splits = [SplitSpec("train", files["train"], "train"), SplitSpec("dev", files["dev"], "eval")]
    if cfg.test:
        splits.append(SplitSpec("test", f"test.{fmt}", "test"))

    def read(folder: Path, split: SplitSpec) -> pd.DataFrame:
        path = folder / split.file
        frame, lines = read_table(path, fmt)
        labeled = split.role != "test" or cfg.label in frame.columns
        require(frame, path, cfg.text_a, cfg.text_b, cfg.label if labeled else None, cfg.id)
        stem = Path(split.file).stem  # rows of train kept for dev keep their train guid
        ids = frame[cfg.id].astype(str) if cfg.id else [f"{stem}-{i}" for i in
                                                        range(1, len(frame) + 1)]
        labels = [_label(v, cfg.regression) for v in frame[cfg.label]] if labeled else None
        found = examples(ids, [_text(v) for v in frame[cfg.text_a]],
                         [_text(v) for v in frame[cfg.text_b]] if cfg.text_b else None,
                         labels, lines)
        if cfg.dev or split.role == "test":
            return found
        held = np.zeros(len(found), bool)
        held[dev_rows(found["label"].tolist(), cfg.dev_fraction, cfg.split_seed,
                      not cfg.regression)] = True
        return found[held if split.name == "dev" else ~held].reset_index(drop=True)

    return TaskSpec(name="custom", title=f"custom: {cfg.train}", splits=tuple(splits), read=read,
                    pair=cfg.text_b is not None,
                    metric="pearson" if cfg.regression else "accuracy", labels=cfg.labels,
                    regression=cfg.regression)
