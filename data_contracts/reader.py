"""Read a tab-separated file strictly: UTF-8, one header line, every line as wide as the header.

Quotes mean nothing, as in google-research/bert's `_read_tsv(quotechar=None)`: MRPC sentences
hold unbalanced `"` characters, and a quote-aware reader would swallow the tabs and lines after one.
Lines end with LF, CRLF or CR (Python's universal newlines, which that reader also used).

    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/pairs.tsv"
    >>> _ = open(path, "wb").write(b'\\xef\\xbb\\xbfQuality\\tString\\r\\n1\\t" The pie .\\r\\n')
    >>> read_tsv(path).to_dict("records")
    [{'Quality': '1', 'String': '" The pie .'}]
"""

from __future__ import annotations

import os

import pandas as pd

from data_contracts.errors import ContractViolation

BOM = b"\xef\xbb\xbf"


def split_lines(text: str) -> list[str]:
    """Lines split at LF, CRLF or CR; the newline that ends the last line starts no new one.

    >>> split_lines("a\\r\\nb\\rc\\n")
    ['a', 'b', 'c']
    >>> split_lines("a\\n\\nb")
    ['a', '', 'b']
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def decode_utf8(data: bytes, file: str) -> str:
    """`data` as text without a leading BOM; bytes that are not UTF-8 raise naming their line."""
    if data.startswith(BOM):
        data = data[len(BOM):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[:err.start].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        line = before.count(b"\n") + 1
        raise ContractViolation.read_error(
            file, "utf-8", f"bytes {data[err.start:err.end]!r} are not valid UTF-8", line=line
        ) from None


def split_fields(lines: list[str], file: str) -> list[list[str]]:
    """Each line cut at tabs; a line with more or fewer fields than the header (line 1) raises.

    >>> split_fields(["a\\tb", "1\\t2"], "f.tsv")
    [['a', 'b'], ['1', '2']]
    """
    rows = [line.split("\t") for line in lines]
    width = len(rows[0])
    bad = [number for number, row in enumerate(rows, start=1) if len(row) != width]
    if bad:
        first = bad[0]
        more = f" (and {len(bad) - 1} more lines)" if len(bad) > 1 else ""
        raise ContractViolation.read_error(
            file, "field count",
            f"expected {width} tab-separated fields as in the header, found {len(rows[first - 1])}"
            f"{more}", line=first)
    return rows


def read_tsv(path: str | os.PathLike, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The file's rows as a DataFrame of strings, columns named exactly as in its header (or, for
    a file without one such as CoLA's, named `columns`: every line is a row).

    Raises ContractViolation for bytes that are not UTF-8, an empty file, or a line whose field
    count differs from the header's (a stray tab, a blank line in the middle). A header with no
    rows gives an empty frame: row-count expectations judge that.
    """
    file = os.fspath(path)
    with open(path, "rb") as f:
        text = decode_utf8(f.read(), file)
    if not text.strip():
        raise ContractViolation.read_error(file, "empty file", "no header line and no rows")
    lines = split_lines(text)
    if columns is None:
        header, *rows = split_fields(lines, file)
        return pd.DataFrame(rows, columns=header, dtype=str)
    rows = [line.split("\t") for line in lines]
    for number, row in enumerate(rows, start=1):
        if len(row) != len(columns):
            raise ContractViolation.read_error(
                file, "field count", f"expected {len(columns)} tab-separated fields "
                f"({', '.join(columns)}), found {len(row)}", line=number)
    return pd.DataFrame(rows, columns=list(columns), dtype=str)
