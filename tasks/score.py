"""Batch scoring: a file of any size through the registered classifier, a chunk at a time.

    input (CSV, TSV, JSONL, Parquet)        output Parquet                       rejects CSV
    index  #1 String  #2 String        ->   index label probability_0 ...  +   row id column reason
    0      "A cat"    "A cat sat"           0     1     0.12 ...                3   7  #1 String empty

The columns are the task's (those of its GLUE test file; the id is `index` where the file has one)
or, for `custom`, the mapping given (text_a, text_b, id). A row whose text is missing or empty
goes to the rejects file instead of the model; every other row gets the served model's answer
(pyfunc_model.TextModel: label, probability_<label>..., probability, or score; model_version).
Memory stays bounded: `chunk_rows` rows are held at a time, sent to the model in requests of at
most its max_batch_rows, written as one Parquet row group.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from prefect import task
from pydantic import BaseModel, ConfigDict, Field, computed_field

from data_contracts.errors import ContractViolation
from data_contracts.specs.config import FileFormat
from data_contracts.specs.custom import file_format
from tasks.streams import Chunk, ParquetSink, RejectsSink, read_chunks, staged

logger = logging.getLogger(__name__)
TaskName = Literal["mrpc", "cola", "sst2", "rte", "stsb", "mnli", "xnli", "custom"]
# The text columns of each built-in task's file to predict (its GLUE test file), and the id.
TASK_TEXTS = {"mrpc": ("#1 String", "#2 String"), "cola": ("sentence", None),
              "sst2": ("sentence", None), "rte": ("sentence1", "sentence2"),
              "stsb": ("sentence1", "sentence2"), "mnli": ("sentence1", "sentence2"),
              "xnli": ("sentence1", "sentence2"), "custom": ("text", None)}
TASK_ID = "index"
ROW = "row"  # the output's id column when the input has none: the row's number, from 1
DEFAULT_MAX_BATCH_ROWS = 1024  # a served model's max_batch_rows when its config has none


class ScoreConfig(BaseModel):
    """What to score, with what, and where the answers go."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: str = Field(description="The file to score: CSV, TSV, JSON Lines or Parquet.")
    output: str = Field(description="The Parquet file of answers (rejects: <stem>.rejects.csv).")
    task: TaskName = Field("mrpc", description="Whose column layout and champion: a built-in "
                                               "task's, or custom (text_a, text_b, id).")
    model_uri: str | None = Field(None, description="An MLflow model URI. Default: the "
                                                    "champion of bertflow-<task>.")
    text_a: str | None = Field(None, description="The column of the (first) text (default: the "
                                                 "task's; custom: `text`).")
    text_b: str | None = Field(None, description="The column of the second text, for pairs.")
    id: str | None = Field(None, description="A column of ids copied to the output (default: "
                                             "`index` where there is one, else the row number).")
    format: FileFormat = Field("auto", description="The input's format (auto: by its suffix).")
    home: str = Field(".bertflow", description="The pipeline's home (its MLflow store).")
    tracking_uri: str | None = Field(None, description="Default: SQLite store under home.")
    chunk_rows: int = Field(8192, ge=1, description="Rows read, scored and written at a time.")


@dataclass(frozen=True)
class Columns:
    """The input's text columns and its id column; `id_required`: False when the id is the
    task's default, used only where the file has it."""

    text_a: str
    text_b: str | None
    id: str | None
    id_required: bool

    @property
    def texts(self) -> tuple[str, ...]:
        return (self.text_a,) if self.text_b is None else (self.text_a, self.text_b)


class ScoreSummary(BaseModel):
    """What a scoring run did: rows read, scored and rejected, where they went, how fast."""

    input: str
    output: str
    rejects: str
    model_uri: str
    model_version: str
    rows: int
    scored: int
    rejected: int
    seconds: float
    verb: str = "scored"

    @computed_field
    @property
    def rows_per_second(self) -> float:
        return self.rows / max(self.seconds, 1e-9)

    def line(self) -> str:
        """'scored 99990 of 100000 rows (10 rejected) in 12.3 s, 8130 rows/s: ...'."""
        return (f"{self.verb} {self.scored} of {self.rows} rows ({self.rejected} rejected) in "
                f"{self.seconds:.1f} s, {self.rows_per_second:.0f} rows/s, with "
                f"{self.model_version}\n  answers: {self.output}\n  rejects: {self.rejects}")


def input_columns(task: str, text_a: str | None = None, text_b: str | None = None,
                  id: str | None = None, pair: bool | None = None) -> Columns:
    """The columns to read: the task's, where the given ones leave them open; a model that
    reads one text (`pair` False) gets text_a only.

    >>> input_columns("rte")
    Columns(text_a='sentence1', text_b='sentence2', id='index', id_required=False)
    >>> input_columns("custom", text_a="review", id="review_id", pair=False)
    Columns(text_a='review', text_b=None, id='review_id', id_required=True)
    """
    default_a, default_b = TASK_TEXTS[task]
    b = text_b or (default_b if task != "custom" else None)
    return Columns(text_a or default_a, b if pair is not False else None,
                   id or (TASK_ID if task != "custom" else None), id is not None)


def rejects_path(output: Path) -> Path:
    """Where the rows that could not be scored go: beside the output.

    >>> rejects_path(Path("out/scores.parquet")).as_posix()
    'out/scores.rejects.csv'
    """
    return output.with_name(f"{output.stem}.rejects.csv")


def split_rejects(chunk: Chunk, columns: Columns) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The chunk's rows with every text present (an id column first: the input's, else `row`),
    and the rejects (row, id, column, reason): the first text column of each row that is
    missing or blank.

    >>> chunk = Chunk(pd.DataFrame({"t": ["a cat", None, " "]}), 5, 0, 0)
    >>> good, bad = split_rejects(chunk, Columns("t", None, None, False))
    >>> good.to_dict("records"), bad.to_dict("records")[1]
    ([{'row': 5, 't': 'a cat'}], {'row': 7, 'id': '7', 'column': 't', 'reason': 'empty text'})
    """
    frame = chunk.frame
    rows = pd.RangeIndex(chunk.first_row, chunk.first_row + len(frame))
    name = columns.id if columns.id in frame.columns else ROW
    ids = frame[name] if name != ROW else pd.Series(rows, index=frame.index)
    reason = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    column = reason.copy()
    for text in columns.texts:
        values = frame[text]
        missing, blank = values.isna(), values.fillna("x").str.strip() == ""
        for mask, why in ((missing, "missing text"), (blank, "empty text")):
            new = mask & reason.isna()
            reason[new], column[new] = why, text
    bad = reason.notna().to_numpy()
    good = frame.loc[~bad, list(columns.texts)]
    good.insert(0, name, ids[~bad].to_numpy())
    rejects = pd.DataFrame({"row": rows[bad], "id": ids[bad].astype(str).to_numpy(),
                            "column": column[bad].to_numpy(), "reason": reason[bad].to_numpy()})
    return good, rejects


def answer(model, good: pd.DataFrame, columns: Columns, served: tuple[str, ...],
           max_rows: int, version: str) -> pd.DataFrame:
    """The served model's answers to `good`'s texts, requests of at most `max_rows` rows,
    beside `good`'s id column; model_version `version` where the model does not say one."""
    inputs = pd.DataFrame({name: good[column].to_numpy(dtype=object)
                           for name, column in zip(served, columns.texts)})
    parts = [model.predict(inputs.iloc[i:i + max_rows].reset_index(drop=True))
             for i in range(0, len(inputs), max_rows)]
    frame = pd.concat(parts, ignore_index=True)
    if "model_version" not in frame.columns:
        frame["model_version"] = version
    frame.insert(0, good.columns[0], good.iloc[:, 0].to_numpy())
    return frame


def scored_chunks(model, chunks: Iterator[Chunk], columns: Columns, served: tuple[str, ...],
                  max_rows: int, version: str) -> Iterator[tuple[Chunk, pd.DataFrame,
                                                                 pd.DataFrame]]:
    """Each chunk with its answers and its rejects."""
    for chunk in chunks:
        good, rejects = split_rejects(chunk, columns)
        answers = (answer(model, good, columns, served, max_rows, version) if len(good)
                   else None)
        yield chunk, answers, rejects


def served_model(model) -> tuple[tuple[str, ...], bool, int]:
    """A loaded pyfunc's input columns, whether it reads pairs, and its largest request."""
    from tasks.serving import served_inputs

    served = served_inputs(model)
    inner = model.unwrap_python_model()
    rows = int(getattr(inner, "max_batch_rows", None) or DEFAULT_MAX_BATCH_ROWS)
    return served, len(served) == 2, rows


def check_pair(columns: Columns, pair: bool, path: Path) -> None:
    """A sentence-pair model needs a second text column."""
    if pair and columns.text_b is None:
        raise ContractViolation.read_error(
            str(path), "columns", "the model reads sentence pairs: name the second text's "
                                  "column (--text-b)")


def score_file(model, cfg: ScoreConfig, version: str,
               progress=None) -> ScoreSummary:
    """Score cfg.input with the loaded pyfunc `model` into cfg.output and its rejects file,
    both published only when every row is done. `progress(chunk, scored)` after each chunk."""
    source, out = Path(cfg.input), Path(cfg.output)
    served, pair, max_rows = served_model(model)
    columns = input_columns(cfg.task, cfg.text_a, cfg.text_b, cfg.id, pair)
    check_pair(columns, pair, source)
    fmt = file_format(str(source), cfg.format)
    optional = () if columns.id is None or columns.id_required else (columns.id,)
    required = (*columns.texts, *((columns.id,) if columns.id_required else ()))
    start, rejected = time.monotonic(), 0
    rejects_file = rejects_path(out)
    with staged(out, rejects_file) as (out_tmp, rejects_tmp):
        answers_sink = ParquetSink(out_tmp, {"bertflow.model_uri": cfg.model_uri or "",
                                             "bertflow.input": str(source)})
        rejects_sink = RejectsSink(rejects_tmp)
        chunks = read_chunks(source, fmt, required, cfg.chunk_rows, optional)
        id_name = ROW
        for chunk, answers, rejects in scored_chunks(model, chunks, columns, served, max_rows,
                                                     version):
            id_name = columns.id if columns.id in chunk.frame.columns else ROW
            if answers is not None:
                answers_sink.write(answers)
            rejects_sink.write(rejects)
            rejected += len(rejects)
            if progress:
                progress(chunk, answers_sink.rows + rejected)
        answers_sink.close(pd.DataFrame({id_name: pd.Series([], dtype=object),
                                         "model_version": pd.Series([], dtype=object)}))
        rejects_sink.close()
    return ScoreSummary(input=str(source), output=str(out), rejects=str(rejects_file),
                        model_uri=cfg.model_uri or "", model_version=version,
                        rows=answers_sink.rows + rejected, scored=answers_sink.rows,
                        rejected=rejected, seconds=time.monotonic() - start)


def progress_bar(description: str, unit_of: str):
    """A tqdm bar on stderr over the file read (bytes, or rows for Parquet), rows done beside
    it; returns (update(chunk, rows), close())."""
    from tqdm import tqdm

    bar = None

    def update(chunk: Chunk, rows: int) -> None:
        nonlocal bar
        if bar is None:
            bytes_ = unit_of != "parquet"
            bar = tqdm(total=chunk.total, desc=description, file=sys.stderr, mininterval=1.0,
                       unit="B" if bytes_ else " rows", unit_scale=bytes_, dynamic_ncols=True)
        bar.update(chunk.done - bar.n)
        bar.set_postfix_str(f"{rows} rows", refresh=False)

    def close() -> None:
        if bar is not None:
            bar.close()

    return update, close


@task(name="score")
def score(cfg: ScoreConfig, model_uri: str, version: str) -> ScoreSummary:
    """Score cfg.input with the model at `model_uri` (a concrete version): see `score_file`."""
    from tasks.config import RegistryConfig
    from tasks.progress import run_log
    from tasks.serving import load_model

    registry = RegistryConfig(tracking_uri=cfg.tracking_uri)
    model = load_model(model_uri, Path(cfg.home), registry)
    update, close = progress_bar(f"score {Path(cfg.input).name}",
                                 file_format(cfg.input, cfg.format))
    try:
        summary = score_file(model, cfg.model_copy(update={"model_uri": model_uri}), version,
                             update)
    finally:
        close()
    run_log(logger)(summary.line())
    return summary


def pinned(model_uri: str | None, model_name: str, client) -> tuple[str, str]:
    """(a URI of one version, "<name>/<version>") for a model URI or, with None, the champion of
    `model_name`: an alias is looked up once, so a champion moved mid-run changes no answer.
    A URI that names no registered version answers "unregistered"."""
    import re

    from tasks.promotion import CHAMPION

    uri = model_uri or f"models:/{model_name}@{CHAMPION}"
    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", uri)
    if match is None:
        return uri, "unregistered"
    name, alias, number = match.groups()
    if alias is not None:
        number = client.get_model_version_by_alias(name, alias).version
    return f"models:/{name}/{number}", f"{name}/{number}"


@task(name="model-version")
def model_version(cfg: ScoreConfig) -> tuple[str, str]:
    """The version that scores the file (see `pinned`)."""
    import mlflow

    from tasks.config import RegistryConfig
    from tasks.mlflow_store import sqlite_file, tracking_uri
    from tasks.serving import for_task_name

    registry = for_task_name(RegistryConfig(tracking_uri=cfg.tracking_uri), cfg.task)
    uri = tracking_uri(registry, Path(cfg.home))
    db = sqlite_file(uri)
    if db and not db.is_file() and (cfg.model_uri or "models:/").startswith("models:/"):
        raise FileNotFoundError(f"no MLflow store at {db}: run the pipeline first, "
                                "or give a model URI")
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    return pinned(cfg.model_uri, registry.model_name, client)
