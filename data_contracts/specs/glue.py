"""The GLUE tasks in the layout of their public release (GLUE's TSVs, read as run_classifier and
Hugging Face's GLUE processors read them: tab-separated, quotes meaning nothing).

    task    files                                          text_a / text_b        label     metric
    mrpc    train dev test .tsv                            #1 String / #2 String  Quality   f1
    cola    train dev .tsv (no header), test.tsv           sentence (column 4)    column 2  mcc
    sst2    train dev test .tsv                            sentence               label     accuracy
    rte     train dev test .tsv                            sentence1 / sentence2  label     accuracy
    stsb    train dev test .tsv                            sentence1 / sentence2  score     pearson
    mnli    train dev_matched dev_mismatched               sentence1 / sentence2  gold_label accuracy
            test_matched test_mismatched .tsv
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from data_contracts.errors import ContractViolation
from data_contracts.reader import read_tsv
from data_contracts.specs.spec import Source, SplitSpec, TaskSpec, examples

GLUE_ZIP = "https://dl.fbaipublicfiles.com/glue/data/{}.zip"
COLA_COLUMNS = ("source", "label", "author_mark", "sentence")  # CoLA's train/dev have no header
NLI_LABELS = ("contradiction", "entailment", "neutral")


def require(frame: pd.DataFrame, file: Path, *columns: str | None) -> None:
    """A read error naming the columns the task needs that the file lacks."""
    missing = [c for c in columns if c is not None and c not in frame.columns]
    if missing:
        raise ContractViolation.read_error(
            str(file), "columns", f"no column {', '.join(map(repr, missing))} "
                                  f"(found {', '.join(map(repr, frame.columns))})")


def tsv_reader(text_a: str, text_b: str | None, label: str, guid: str | None = None,
               columns: tuple[str, ...] | None = None, first: int = 1,
               test_columns: tuple[str, str | None] | None = None, as_score: bool = False):
    """A reader of GLUE TSVs: examples from the named columns; the guid is `<file stem>-<value
    of column guid>`, or of the row number counted from `first`; `columns` names the columns of a
    file without a header; `test_columns` (text_a, text_b) are those of the test file when its
    layout differs (CoLA's)."""

    def read(folder: Path, split: SplitSpec) -> pd.DataFrame:
        path = folder / split.file
        is_test = split.role == "test"
        frame = read_tsv(path, None if is_test and test_columns else columns)
        a, b = test_columns if is_test and test_columns else (text_a, text_b)
        require(frame, path, a, b, None if is_test else label)
        stem = Path(split.file).stem
        start = 1 if is_test and test_columns else first  # a test file with a header line
        ids = frame[guid] if guid and guid in frame else range(start, start + len(frame))
        offset = 1 if columns is None or (is_test and test_columns) else 0  # the header line
        labels = None if is_test else frame[label].tolist()
        if labels is not None and as_score:
            labels = [_score(value) for value in labels]
        return examples([f"{stem}-{i}" for i in ids], frame[a].tolist(),
                        frame[b].tolist() if b else None, labels,
                        range(1 + offset, 1 + offset + len(frame)))
    return read


def _score(value: str) -> float:
    """A regression label as a float; what is not a number becomes NaN, which the contract's
    numeric rule reports with its line."""
    try:
        return float(value)
    except ValueError:
        return math.nan


def _splits(*names: tuple[str, str, str]) -> tuple[SplitSpec, ...]:
    return tuple(SplitSpec(name, file, role) for name, file, role in names)  # type: ignore[arg-type]


STANDARD = _splits(("train", "train.tsv", "train"), ("dev", "dev.tsv", "eval"),
                   ("test", "test.tsv", "test"))


def _glue_source(zip_name: str, pins: dict[str, str]) -> Source:
    return Source(GLUE_ZIP.format(zip_name), f"{zip_name}/", pins)


MRPC = TaskSpec(
    name="mrpc", title="MRPC: is sentence B a paraphrase of sentence A?", splits=STANDARD,
    read=tsv_reader("#1 String", "#2 String", "Quality"), pair=True, metric="f1",
    labels=("0", "1"), positive="1", submission={"test": "MRPC.tsv"},
    row_bounds={"train": (3000, 5000), "dev": (300, 600), "test": (1000, 2500)})

COLA = TaskSpec(
    name="cola", title="CoLA: is the sentence grammatical?", splits=STANDARD,
    read=tsv_reader("sentence", None, "label", columns=COLA_COLUMNS, first=0,
                    test_columns=("sentence", None)),
    pair=False, metric="mcc", labels=("0", "1"), positive="1", submission={"test": "CoLA.tsv"},
    row_bounds={"train": (6000, 12000), "dev": (700, 1500), "test": (700, 1500)},
    source=_glue_source("CoLA", {
        "train.tsv": "cb368ebeb9f27d7ad03720d27ddc95687a311bdb100781a2fe59a5f5b1bc0624",
        "dev.tsv": "8c013e21dc39957cac37378d87bebe225b694a0d5fe13eded66c2856628833fd",
        "test.tsv": "3b4df85f7a9a0633574b38d181e18090ac961a24b18fb6bcd74999ddea8ad0b8"}))

SST2 = TaskSpec(
    name="sst2", title="SST-2: is the sentence positive?", splits=STANDARD,
    read=tsv_reader("sentence", None, "label", guid=None), pair=False, metric="accuracy",
    labels=("0", "1"), positive="1", submission={"test": "SST-2.tsv"},
    row_bounds={"train": (50000, 90000), "dev": (600, 1200), "test": (1200, 2500)},
    source=_glue_source("SST-2", {
        "train.tsv": "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
        "dev.tsv": "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
        "test.tsv": "69a938605609b3e6663b4487918fe1565eb293734e6e520d0366d1d412fd2a13"}))

RTE = TaskSpec(
    name="rte", title="RTE: does sentence A entail sentence B?", splits=STANDARD,
    read=tsv_reader("sentence1", "sentence2", "label", guid="index"), pair=True,
    metric="accuracy", labels=("entailment", "not_entailment"), positive="entailment",
    submission={"test": "RTE.tsv"},
    row_bounds={"train": (2000, 3000), "dev": (200, 400), "test": (2500, 3500)},
    source=_glue_source("RTE", {
        "train.tsv": "41e3a9b063433392343fad9e962cf2f58b681c78d8f71592f4186f0837246c5c",
        "dev.tsv": "80230dfa1347282e7b532b06a1004a76a710087541189bf874223ddf0e3819fb",
        "test.tsv": "6e33f09b5c2bfd5fd5fde217070f3dd49e484e33b9752b5864cf36fc421a213f"}))

STSB = TaskSpec(
    name="stsb", title="STS-B: how similar are the two sentences, 0 to 5?", splits=STANDARD,
    read=tsv_reader("sentence1", "sentence2", "score", guid="index", as_score=True), pair=True,
    metric="pearson", regression=True, score_range=(0.0, 5.0), submission={"test": "STS-B.tsv"},
    row_bounds={"train": (4500, 7000), "dev": (1200, 1800), "test": (1100, 1700)},
    source=_glue_source("STS-B", {
        "train.tsv": "41c4d978b6162abdcada7e49a982211954cca5459c228db478af333124b257a2",
        "dev.tsv": "fe7dc0632a5033562f3cadff991f6e8d9b9b6311861660e78c3c82eb7db67f59",
        "test.tsv": "16b4223d7d44a644fbc10f1b449472cfe81e1715fb07cf44023b0aa88ce856eb"}))

MNLI = TaskSpec(
    name="mnli", title="MNLI: does A entail, contradict or leave open B (3 labels)?",
    splits=_splits(("train", "train.tsv", "train"), ("dev", "dev_matched.tsv", "eval"),
                   ("dev_mismatched", "dev_mismatched.tsv", "eval"),
                   ("test", "test_matched.tsv", "test"),
                   ("test_mismatched", "test_mismatched.tsv", "test")),
    read=tsv_reader("sentence1", "sentence2", "gold_label", guid="index"), pair=True,
    metric="accuracy", labels=NLI_LABELS,
    submission={"test": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
    row_bounds={"train": (350000, 450000), "dev": (9000, 11000), "test": (9000, 11000)},
    source=_glue_source("MNLI", {}))
