"""Validate MRPC files and tokenized shards against their suites, and report what broke.

    report = validate_mrpc_split("data/dev.tsv", "dev", min_rows=400,
                                 train_pairs=mrpc_pairs(read_tsv("data/train.tsv")))
    report.table()                # one row per expectation, for a table artifact
    report.raise_for_failures()   # ContractViolation naming file, rule, failing rows, examples

A failure reads like

    data/dev.tsv: 1 of 11 expectations of suite mrpc_dev failed (408 rows):
      - expect_column_values_to_be_in_set on Quality (Quality is 0 or 1): 1 failing row,
        e.g. row 3 (line 4): '2'

Rows are numbered from 1 over the data rows; for a TSV the file line is one more (the header).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from data_contracts.context import ephemeral_context
from data_contracts.errors import ContractViolation
from data_contracts.reader import read_tsv
from data_contracts.shard_stats import LIST_COLUMNS, shard_row_stats
from data_contracts.suites import ID_COLUMNS, PAIR_IN_TRAIN, get_suite

EXAMPLES = 5  # failing values kept per expectation
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES}
SPLITS = ("train", "dev", "test")
Lines = int | Sequence[int] | None  # a file's header lines, or the line each row starts on


@dataclass(frozen=True)
class ExpectationResult:
    """The outcome of one expectation, in plain values (no GX objects)."""

    expectation: str  # e.g. "expect_column_values_to_be_in_set"
    column: str | None  # a compound expectation's columns as "(#1 ID, #2 ID)"; None for the table
    success: bool
    unexpected_count: int  # failing rows; 0 for table-level expectations
    examples: list = field(default_factory=list)  # e.g. ["row 3 (line 4): '2'"], at most EXAMPLES
    rule: str = ""  # the suite's sentence for it, e.g. "Quality is 0 or 1"

    def describe(self) -> str:
        """One line for an error message.

        >>> ExpectationResult("expect_column_values_to_be_in_set", "Quality", False, 1,
        ...                   ["row 3 (line 4): '2'"], "Quality is 0 or 1").describe()[34:]
        "on Quality (Quality is 0 or 1): 1 failing row, e.g. row 3 (line 4): '2'"
        """
        what = self.expectation + (f" on {self.column}" if self.column else "")
        what += f" ({self.rule})" if self.rule else ""
        shown = ", ".join(self.examples[:EXAMPLES])
        if not self.unexpected_count:
            return f"{what}: {shown or 'failed'}"
        rows = f"{self.unexpected_count} failing row{'s' if self.unexpected_count > 1 else ''}"
        return f"{what}: {rows}" + (f", e.g. {shown}" if shown else "")


@dataclass(frozen=True)
class ValidationReport:
    """Every expectation of one suite run over one file, in suite order."""

    file: str
    suite: str
    rows: int
    results: list[ExpectationResult]

    @property
    def success(self) -> bool:
        return all(result.success for result in self.results)

    @property
    def failures(self) -> list[ExpectationResult]:
        return [result for result in self.results if not result.success]

    def table(self) -> list[dict]:
        """One dict per expectation, ready for a table artifact."""
        return [{"expectation": r.expectation, "column": r.column or "", "rule": r.rule,
                 "success": "pass" if r.success else "FAIL",
                 "unexpected_count": r.unexpected_count,
                 "examples": _clip("; ".join(r.examples[:3]), 160)} for r in self.results]

    def raise_for_failures(self) -> None:
        """Raise ContractViolation listing each failed expectation, unless all passed."""
        failures = self.failures
        if not failures:
            return
        lines = [f"{self.file}: {len(failures)} of {len(self.results)} expectations of suite "
                 f"{self.suite} failed ({self.rows} rows):"]
        lines += [f"  - {failure.describe()}" for failure in failures]
        raise ContractViolation(self.file, "\n".join(lines), failures=failures)


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _short(value: Any) -> str:
    """A failing value as it reads in a message: numpy scalars as Python ones, long text clipped."""
    if isinstance(value, np.generic):
        value = value.item()
    return _clip(repr(value))


def _where(index: Any, lines: Lines) -> str:
    """The prefix "row 3 (line 4): " for GX index 2 of a file with one header line (`lines` 1),
    or whose rows start on the lines listed (a CSV's quoted fields may span lines)."""
    if not isinstance(index, (int, np.integer)):
        return ""
    row = int(index) + 1
    if lines is None:
        return f"row {row}: "
    line = row + lines if isinstance(lines, int) else lines[row - 1]
    return f"row {row} (line {line}): "


def _exception_message(gx_result: Any) -> str | None:
    """The error GX caught while computing an expectation (a missing column), if any."""
    info = gx_result.exception_info or {}
    nested = [info] + [value for value in info.values() if isinstance(value, dict)]
    for entry in nested:
        if entry.get("raised_exception"):
            return str(entry.get("exception_message")).removeprefix("Error: ")
    return None


def _examples(result: dict, line_offset: Lines) -> list[str]:
    """A few readable failures from a GX result dict, whatever kind of expectation it is."""
    if "partial_unexpected_list" in result:
        values = result["partial_unexpected_list"][:EXAMPLES]
        indexes = result.get("partial_unexpected_index_list") or [None] * len(values)
        return [_where(index, line_offset) + _short(value) for index, value in zip(indexes, values)]
    mismatched = (result.get("details") or {}).get("mismatched")
    if mismatched:  # ordered column list: positions are 0-based
        return [f"column {m['Expected Column Position'] + 1}: expected {m['Expected']!r}, "
                + (f"found {m['Found']!r}" if m["Found"] is not None else "missing")
                for m in mismatched[:EXAMPLES]]
    if "observed_value" in result:
        return [f"observed {_short(result['observed_value'])}"]
    return []


def to_result(gx_result: Any, line_offset: Lines = None) -> ExpectationResult:
    """Our plain record of one GX ExpectationValidationResult."""
    config = gx_result.expectation_config
    column = config.kwargs.get("column")
    if column is None and "column_list" in config.kwargs and not config.type.startswith(
            "expect_table"):
        column = "(" + ", ".join(config.kwargs["column_list"]) + ")"
    error = _exception_message(gx_result)
    result = dict(gx_result.result or {})
    examples = [f"error: {error}"] if error else _examples(result, line_offset)
    return ExpectationResult(expectation=config.type, column=column,
                             success=bool(gx_result.success) and not error,
                             unexpected_count=int(result.get("unexpected_count") or 0),
                             examples=examples, rule=config.description or "")


def run_suite(context: Any, frame: pd.DataFrame, suite: Any, *, asset: str,
              line_offset: Lines = None) -> list[ExpectationResult]:
    """Validate `frame` against `suite` in `context`; results in the suite's order."""
    batch = (context.data_sources.add_pandas(asset)
             .add_dataframe_asset(asset)
             .add_batch_definition_whole_dataframe("whole frame")
             .get_batch(batch_parameters={"dataframe": frame}))
    outcome = batch.validate(suite, result_format=RESULT_FORMAT)
    order = {expectation.description: i for i, expectation in enumerate(suite.expectations)}
    ordered = sorted(outcome.results,
                     key=lambda r: order.get(r.expectation_config.description, len(order)))
    return [to_result(gx_result, line_offset) for gx_result in ordered]


def mrpc_pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    """The (#1 ID, #2 ID) pairs of a raw MRPC frame.

    >>> sorted(mrpc_pairs(pd.DataFrame({"#1 ID": ["1", "3"], "#2 ID": ["2", "4"]})))
    [('1', '2'), ('3', '4')]
    """
    return set(zip(frame[ID_COLUMNS[0]], frame[ID_COLUMNS[1]]))


def with_pair_in(frame: pd.DataFrame, pairs: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """`frame` plus the boolean column PAIR_IN_TRAIN: is the row's id pair one of `pairs`?"""
    known = set(pairs)
    in_train = [pair in known for pair in zip(frame[ID_COLUMNS[0]], frame[ID_COLUMNS[1]])]
    return frame.assign(**{PAIR_IN_TRAIN: in_train})


def validate_mrpc_split(path: str | os.PathLike, split: str, *, min_rows: int = 1,
                        max_rows: int = 10_000_000,
                        train_pairs: set[tuple[str, str]] | None = None) -> ValidationReport:
    """Read a GLUE MRPC file strictly and validate it against suite `mrpc_<split>`.

    Read errors (bytes, field counts, an empty file) raise ContractViolation at once. With
    `train_pairs` (see `mrpc_pairs`), a dev or test file also must share no id pair with train.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "train" and train_pairs is not None:
        raise ValueError("train_pairs checks another split against train, not train itself")
    frame = read_tsv(path)
    context = ephemeral_context()
    suite = get_suite(f"mrpc_{split}", min_rows=min_rows, max_rows=max_rows)
    results = run_suite(context, frame, suite, asset=split, line_offset=1)
    # Without both id columns the header rule has failed already; there is no pair to compare.
    if train_pairs is not None and frame.columns.is_unique and set(ID_COLUMNS) <= set(frame):
        results += run_suite(context, with_pair_in(frame, train_pairs),
                             get_suite("mrpc_cross_split"), asset="cross_split", line_offset=1)
    return ValidationReport(os.fspath(path), suite.name, len(frame), results)


def validate_shard_frame(frame: pd.DataFrame, *, file: str, max_seq_length: int, vocab_size: int,
                         cls_id: int, sep_id: int, label_set: Sequence[int] | None = (0, 1),
                         expected_rows: int, labeled: bool = True,
                         pair: bool = True) -> ValidationReport:
    """Validate a tokenized shard (as read from its Parquet file) against suite `shards`;
    `label_set` None: labels are scores (regression); `pair`: two sentences per example.

    Rules are checked on per-row facts from `shard_row_stats`; an example such as
    "row 7: 127" under `n_ids` means data row 7 holds 127 input ids.
    """
    missing = [name for name in LIST_COLUMNS if name not in frame.columns]
    if missing:
        raise ContractViolation.read_error(file, "columns", f"no column {', '.join(missing)} "
                                           f"(found {', '.join(map(str, frame.columns))})")
    suite = get_suite("shards", max_seq_length=max_seq_length, vocab_size=vocab_size,
                      cls_id=cls_id, sep_id=sep_id, label_set=label_set or (),
                      expected_rows=expected_rows, labeled=labeled,
                      classified=labeled and label_set is not None, seps=2 if pair else 1,
                      single=not pair)
    stats = shard_row_stats(frame, sep_id=sep_id)
    results = run_suite(ephemeral_context(), stats, suite, asset="shard")
    return ValidationReport(str(file), suite.name, len(frame), results)
