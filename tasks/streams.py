"""Files too big to hold: read in chunks of rows, written as they come, published all at once.

    for chunk in read_chunks(Path("pairs.tsv"), "tsv", ["#1 String", "#2 String"], 10_000):
        chunk.frame, chunk.first_row, chunk.done / chunk.total      # strings or None; progress
    with staged(Path("out.parquet"), Path("out.rejects.csv")) as (out_tmp, rejects_tmp):
        ...                                                          # renamed over both at the end

CSV (RFC 4180 quoting) and TSV (GLUE's: quotes mean nothing) stream through pyarrow's CSV reader,
Parquet by its row groups, JSON Lines a line at a time; a leading UTF-8 BOM is skipped. Only the
columns asked for are read, each as text. A column the file lacks, bytes that are not UTF-8, a row
wider or narrower than the header: a ContractViolation naming the file.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from data_contracts.errors import ContractViolation
from data_contracts.reader import BOM
from data_contracts.specs.glue import require

BLOCK_BYTES = 1 << 20  # what pyarrow's CSV reader parses at a time


@dataclass(frozen=True)
class Chunk:
    """Consecutive rows of a file: `frame` holds the columns asked for (str, or None where a
    JSON or Parquet value is missing); `first_row` numbers its first row (1 = the file's first
    data row); `done` of `total` is how far the file has been read (bytes; rows for Parquet)."""

    frame: pd.DataFrame
    first_row: int
    done: int
    total: int


def as_text(value) -> str | None:
    """A cell as text: None (and NaN) stay None, numbers become their digits.

    >>> as_text("a cat"), as_text(None), as_text(float("nan")), as_text(3), as_text(2.0)
    ('a cat', None, None, '3', '2')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


def text_frame(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The `columns` of `frame` as object columns of str or None (see `as_text`)."""
    return pd.DataFrame({c: [as_text(v) for v in frame[c].tolist()] for c in columns},
                        columns=list(columns))


def rebatch(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """The batches' rows again, `rows` at a time (the last table may be shorter).

    >>> batch = pa.record_batch({"x": [1, 2, 3]})
    >>> [t.num_rows for t in rebatch(iter([batch, batch, batch]), 4)]
    [4, 4, 1]
    """
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(held)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            held, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(held)


def header(path: Path, fmt: str) -> list[str]:
    """The column names of a CSV or TSV file's first line (a BOM skipped)."""
    with open(path, "rb") as f:
        first = f.readline()
    try:
        line = first.removeprefix(BOM).decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ContractViolation.read_error(str(path), "utf-8", "the header line is not UTF-8",
                                           line=1) from None
    if not line:
        raise ContractViolation.read_error(str(path), "empty file", "no header line")
    return line.split("\t") if fmt == "tsv" else next(csv.reader([line]))


def present(names: Sequence[str], path: Path, columns: Sequence[str],
            optional: Sequence[str]) -> list[str]:
    """`columns` and those of `optional` among `names` (a file's columns); a ContractViolation
    naming the file when one of `columns` is not there.

    >>> present(["index", "text"], Path("a.tsv"), ["text"], ["index", "guid"])
    ['text', 'index']
    """
    require(pd.DataFrame(columns=list(names)), path, *columns)
    return [*columns, *(c for c in optional if c in names and c not in columns)]


def _csv_chunks(path: Path, fmt: str, columns: Sequence[str], rows: int) -> Iterator[Chunk]:
    from pyarrow import csv as pacsv

    tsv = fmt == "tsv"
    parse = pacsv.ParseOptions(delimiter="\t" if tsv else ",", quote_char=False if tsv else '"',
                               newlines_in_values=not tsv)
    convert = pacsv.ConvertOptions(include_columns=list(columns),
                                   column_types={c: pa.string() for c in columns},
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    total, first = path.stat().st_size, 1
    with open(path, "rb") as f:
        reader = pacsv.open_csv(f, read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
                                parse_options=parse, convert_options=convert)
        for table in rebatch(iter(reader), rows):
            yield Chunk(table.to_pandas(), first, min(f.tell(), total), total)
            first += table.num_rows


def _jsonl_chunks(path: Path, columns: Sequence[str], rows: int) -> Iterator[Chunk]:
    total, first, records = path.stat().st_size, 1, []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.removeprefix(BOM) if number == 1 else raw
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ContractViolation.read_error(str(path), "json lines", f"not JSON: {err}",
                                                   line=number) from None
            if not isinstance(record, dict):
                raise ContractViolation.read_error(str(path), "json lines", "expected an "
                                                   f"object, got {type(record).__name__}",
                                                   line=number)
            records.append([as_text(record.get(c)) for c in columns])
            if len(records) == rows:
                yield Chunk(pd.DataFrame(records, columns=list(columns)), first, f.tell(), total)
                first, records = first + rows, []
    if records:
        yield Chunk(pd.DataFrame(records, columns=list(columns)), first, total, total)


def _parquet_chunks(path: Path, columns: Sequence[str], rows: int) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    total, first = file.metadata.num_rows, 1
    for batch in file.iter_batches(batch_size=rows, columns=list(columns)):
        yield Chunk(text_frame(batch.to_pandas(), columns), first, first - 1 + batch.num_rows,
                    total)
        first += batch.num_rows


def file_columns(path: Path, fmt: str) -> list[str]:
    """The columns of a file: its header; a Parquet file's schema; the keys of a JSON Lines
    file's first object."""
    if fmt in ("csv", "tsv"):
        return header(path, fmt)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).schema_arrow.names
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    record = json.loads(line.removeprefix(BOM))
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise ContractViolation.read_error(str(path), "json lines", f"not JSON: "
                                                       f"{err}", line=number) from None
                return list(record) if isinstance(record, dict) else []
    raise ContractViolation.read_error(str(path), "empty file", "no JSON object")


def read_chunks(path: Path, fmt: str, columns: Sequence[str], rows: int,
                optional: Sequence[str] = ()) -> Iterator[Chunk]:
    """The file's `columns` (and those of `optional` it has), `rows` rows at a time (see
    `Chunk`); a missing column, or a file that cannot be read, raises ContractViolation naming
    the file (and the line, where known)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        wanted = present(file_columns(path, fmt), path, columns, optional)
        if fmt in ("csv", "tsv"):
            yield from _csv_chunks(path, fmt, wanted, rows)
        elif fmt == "jsonl":
            yield from _jsonl_chunks(path, wanted, rows)
        else:
            yield from _parquet_chunks(path, wanted, rows)
    except (pa.ArrowException, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ContractViolation.read_error(str(path), fmt, str(err).strip()) from None


@contextmanager
def staged(*targets: Path) -> Iterator[tuple[Path, ...]]:
    """A temporary path beside each target, for the block to write; when it ends without error
    each is renamed onto its target, and when it raises they are removed and the targets (an
    earlier good output, say) stay as they were."""
    temps = []
    with ExitStack() as cleanup:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                        suffix=".tmp")
            os.close(fd)
            temps.append(Path(name))
            cleanup.callback(Path(name).unlink, missing_ok=True)
        yield tuple(temps)
        for temp, target in zip(temps, targets):
            os.replace(temp, target)


class ParquetSink:
    """Frames appended to one Parquet file as row groups, the schema set by the first (later
    frames are cast to it); `close` writes an empty file of `empty`'s columns if none came."""

    def __init__(self, path: Path, metadata: dict[str, str] | None = None):
        self.path, self.metadata, self.writer, self.rows = path, metadata or {}, None, 0

    def write(self, frame: pd.DataFrame) -> None:
        schema = None if self.writer is None else self.writer.schema
        self.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))

    def write_table(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:
            schema = table.schema.remove_metadata().with_metadata(self.metadata)
            self.writer = pq.ParquetWriter(self.path, schema)
        self.writer.write_table(table.cast(self.writer.schema))
        self.rows += table.num_rows

    def close(self, empty: pd.DataFrame | pa.Table) -> None:
        if self.writer is None:
            self.write(empty) if isinstance(empty, pd.DataFrame) else self.write_table(empty)
        self.writer.close()


class RejectsSink:
    """Rows that could not be used, as CSV: row, id, column, reason."""

    COLUMNS = ("row", "id", "column", "reason")

    def __init__(self, path: Path):
        self.file = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - see close
        self.out = csv.writer(self.file)
        self.out.writerow(self.COLUMNS)
        self.rows = 0

    def write(self, rejects: pd.DataFrame) -> None:
        self.out.writerows(rejects[list(self.COLUMNS)].itertuples(index=False, name=None))
        self.rows += len(rejects)

    def close(self) -> None:
        self.file.close()
