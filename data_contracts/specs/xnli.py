"""XNLI as run_classifier's XnliProcessor reads it: machine-translated MultiNLI for training, the
human-translated XNLI 1.0 dev and test files (all 15 languages in one file) for evaluation.

    multinli/multinli.train.<lang>.tsv   premise, hypo, label ("contradictory" means contradiction)
    xnli.dev.tsv, xnli.test.tsv          language, gold_label, ..., sentence1 (column 7),
                                         sentence2 (column 8), ...; rows of other languages skipped

Guids follow run_classifier: `train-<line index>`, `dev-<line index in the whole file>`. The files
come from XNLI-MT-1.0.zip and XNLI-1.0.zip, unpacked into one folder (`data.source`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_contracts.errors import ContractViolation
from data_contracts.reader import read_tsv
from data_contracts.specs.glue import NLI_LABELS
from data_contracts.specs.spec import SplitSpec, TaskSpec, examples

LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi",
             "zh")


def _read(folder: Path, split: SplitSpec, language: str) -> pd.DataFrame:
    path = folder / split.file
    frame = read_tsv(path)
    if split.role == "train":
        _width(frame, path, 3)
        labels = frame.iloc[:, 2].replace("contradictory", "contradiction")
        n = len(frame)
        return examples([f"train-{i}" for i in range(1, n + 1)], frame.iloc[:, 0], frame.iloc[:, 1],
                        labels, range(2, n + 2))
    _width(frame, path, 8)
    rows = [i for i, lang in enumerate(frame.iloc[:, 0]) if lang == language]
    kept = frame.iloc[rows]
    return examples([f"{split.name}-{i + 1}" for i in rows], kept.iloc[:, 6], kept.iloc[:, 7],
                    kept.iloc[:, 1], [i + 2 for i in rows])


def _width(frame: pd.DataFrame, path: Path, needed: int) -> None:
    if frame.shape[1] < needed:
        raise ContractViolation.read_error(
            str(path), "columns", f"XNLI's reader needs at least {needed} columns, found "
                                  f"{frame.shape[1]} ({', '.join(map(repr, frame.columns))})")


def xnli(language: str = "zh") -> TaskSpec:
    """XNLI in `language` (run_classifier's default: zh)."""
    if language not in LANGUAGES:
        raise ValueError(f"XNLI has no language {language!r}: one of {', '.join(LANGUAGES)}")
    return TaskSpec(
        name="xnli", title=f"XNLI ({language}): entailment, contradiction or neutral?",
        splits=(SplitSpec("train", f"multinli/multinli.train.{language}.tsv", "train"),
                SplitSpec("dev", "xnli.dev.tsv", "eval"),
                SplitSpec("test", "xnli.test.tsv", "eval")),
        read=lambda folder, split: _read(folder, split, language), pair=True, metric="accuracy",
        labels=NLI_LABELS,
        row_bounds={"train": (350000, 450000), "dev": (2000, 3000), "test": (4500, 5500)})
