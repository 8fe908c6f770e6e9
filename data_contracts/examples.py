"""Validate a task's examples (data_contracts/specs) against suite `examples`, whatever file
format they came from: non-blank texts, labels in the task's set (or scores in its range),
few repeated examples, few shared with train, the row bounds.

    report = validate_examples(frame, file="dev.csv", spec=spec, split="dev", labels=("neg", "pos"),
                               train=train_frame)
    report.raise_for_failures()   # names the file, the rule, rows and lines, examples
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from data_contracts.context import ephemeral_context
from data_contracts.specs.spec import TaskSpec
from data_contracts.suites import IN_TRAIN, REPEAT, get_suite
from data_contracts.validate import ValidationReport, run_suite


def example_texts(frame: pd.DataFrame) -> pd.Series:
    """Each example's texts as one string ("a<TAB>b", or "a" for one sentence).

    >>> example_texts(pd.DataFrame({"text_a": ["x", "y"], "text_b": [None, "z"]})).tolist()
    ['x', 'y\\tz']
    """
    second = frame["text_b"].map(lambda b: "" if pd.isna(b) else "\t" + str(b))
    return frame["text_a"].astype(str) + second


def with_overlaps(frame: pd.DataFrame, train: pd.DataFrame | None) -> pd.DataFrame:
    """`frame` plus REPEAT (texts repeated from an earlier row) and, given `train`, IN_TRAIN."""
    texts = example_texts(frame)
    derived = {REPEAT: texts.where(texts.duplicated(keep="first"), None)}
    if train is not None:
        derived[IN_TRAIN] = texts.where(texts.isin(set(example_texts(train))), None)
    return frame.assign(**derived)


def validate_examples(frame: pd.DataFrame, *, file: str, spec: TaskSpec, split: str,
                      labels: Sequence[str] | None, bounds: tuple[int, int],
                      train: pd.DataFrame | None = None) -> ValidationReport:
    """One split's examples against the task's rules; `labels` None for a regression task; with
    `train`, dev (or test) also shares few examples with train."""
    labeled = spec.split(split).labeled or bool(frame["label"].notna().any())
    low, high = spec.score_range or (float("-inf"), float("inf"))
    suite = get_suite("examples", pair=spec.pair, labeled=labeled,
                      classified=labeled and not spec.regression,
                      scored=labeled and spec.regression, label_set=list(labels or ()),
                      low=low, high=high, duplicate_share=spec.max_duplicate_share,
                      unique_share=1 - spec.max_duplicate_share, min_rows=bounds[0],
                      max_rows=bounds[1])
    context, lines = ephemeral_context(), frame["line"].tolist()
    checked = with_overlaps(frame, train)
    results = run_suite(context, checked, suite, asset=split, line_offset=lines)
    if train is not None:
        cross = get_suite("examples_cross_split", overlap_share=spec.max_overlap_share,
                          distinct_share=1 - spec.max_overlap_share)
        results += run_suite(context, checked, cross, asset=f"{split}_cross", line_offset=lines)
    return ValidationReport(file, suite.name, len(frame), results)
