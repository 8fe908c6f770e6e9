"""What a task is: how its files become examples, its labels, its metric, its row bounds.

Every split of every task is read into the same examples frame, one row per example:

    guid      text_a                text_b (None: one sentence)   label (None: unlabeled)   line
    train-1   "Amrozi accused ..."  "Referring to him ..."        "1"                       2

`label` is the label name (a string) for classification and the score (a float) for regression;
`line` is where the example starts in its file (the row number for Parquet), for error messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

EXAMPLE_COLUMNS = ("guid", "text_a", "text_b", "label", "line")
Role = Literal["train", "eval", "test"]  # eval: labeled and scored; test: predicted only


@dataclass(frozen=True)
class SplitSpec:
    """One split: its name in the pipeline, its file in the task's data folder, its role."""

    name: str  # "train", "dev" (the one that promotes), "dev_mismatched", "test", ...
    file: str  # "train.tsv"
    role: Role

    @property
    def labeled(self) -> bool:
        return self.role != "test"


@dataclass(frozen=True)
class Source:
    """Where a built-in task's files come from by default: a release zip (its files inside
    `folder`), each file pinned by sha256 where the bytes are known."""

    url: str
    folder: str = ""
    sha256: Mapping[str, str] = field(default_factory=dict)  # file name -> sha256


# (data folder, split) -> examples frame
Reader = Callable[[Path, SplitSpec], pd.DataFrame]


@dataclass(frozen=True)
class TaskSpec:
    """A task, declared: see the module docstring for the frame its reader returns.

    `labels` None means taken from the train data (sorted); `metric` is the GLUE metric that
    promotes by default; `positive` is the class whose F1 binary tasks report; the duplicate and
    overlap shares are how much of a split may repeat an example (real GLUE data does, a little).
    """

    name: str
    title: str
    splits: tuple[SplitSpec, ...]
    read: Reader
    pair: bool
    metric: str
    labels: tuple[str, ...] | None = None
    regression: bool = False
    score_range: tuple[float, float] | None = None
    positive: str | None = None
    row_bounds: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    submission: Mapping[str, str] = field(default_factory=dict)  # test split -> GLUE file name
    source: Source | None = None
    max_duplicate_share: float = 0.01
    max_overlap_share: float = 0.02

    def split(self, name: str) -> SplitSpec:
        for split in self.splits:
            if split.name == name:
                return split
        raise KeyError(f"task {self.name} has no split {name!r}: "
                       f"{', '.join(s.name for s in self.splits)}")

    @property
    def files(self) -> tuple[str, ...]:
        """The distinct files of the task's data folder, in split order."""
        return tuple(dict.fromkeys(split.file for split in self.splits))

    def label_names(self, train: pd.DataFrame) -> tuple[str, ...]:
        """The class names in logit order: the task's, else those of `train`, sorted; () for a
        regression task."""
        if self.regression:
            return ()
        return self.labels or tuple(sorted(train["label"].dropna().astype(str).unique()))

    def positive_label(self, labels: tuple[str, ...]) -> str | None:
        """The class a binary task reports F1 of: the task's, else the second (custom)."""
        return self.positive or (labels[1] if len(labels) == 2 else None)

    def read_all(self, folder: Path) -> dict[str, pd.DataFrame]:
        """Every split's examples, by split name."""
        return {split.name: self.read(folder, split) for split in self.splits}

    def read_split(self, folder: Path, name: str) -> pd.DataFrame:
        """One split's examples (the others' files are not read)."""
        return self.read(folder, self.split(name))

    def bounds(self, split: str) -> tuple[int, int]:
        """Accepted row counts of a split: the task's, by split name, then by role."""
        role = self.split(split).role
        fallback = {"train": "train", "eval": "dev", "test": "test"}[role]
        return self.row_bounds.get(split) or self.row_bounds.get(fallback) or (1, 10_000_000)


def examples(guids, texts_a, texts_b, labels, lines) -> pd.DataFrame:
    """The examples frame from its columns (`texts_b` or `labels` None: a column of None).

    >>> examples(["dev-1"], ["a cat ."], None, ["1"], [2]).to_dict("records")
    [{'guid': 'dev-1', 'text_a': 'a cat .', 'text_b': None, 'label': '1', 'line': 2}]
    """
    n = len(guids)
    return pd.DataFrame({"guid": list(guids), "text_a": list(texts_a),
                         "text_b": [None] * n if texts_b is None else list(texts_b),
                         "label": [None] * n if labels is None else list(labels),
                         "line": [int(line) for line in lines]}, columns=list(EXAMPLE_COLUMNS))
