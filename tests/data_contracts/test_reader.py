"""read_tsv: GLUE's TSV traps (BOM, CRLF, bare quotes) read right; bad files name line and rule."""

from __future__ import annotations

import pytest

from data_contracts.errors import ContractViolation
from data_contracts.reader import read_tsv, split_lines
from tests.data_contracts.conftest import TRAIN_HEADER, TRAIN_ROWS


def test_bom_crlf_file_reads_as_strings_with_quotes_intact(write_tsv):
    frame = read_tsv(write_tsv())
    assert list(frame.columns) == TRAIN_HEADER  # no BOM left on "Quality"
    assert frame.values.tolist() == TRAIN_ROWS  # no "\r" left on the last column
    assert frame.loc[2, "#2 String"].startswith('" The foodservice pie business')
    assert all(isinstance(value, str) for value in frame.to_numpy().ravel())


def test_lf_without_bom_or_final_newline_reads_the_same(write_tsv):
    path = write_tsv(bom=False, newline="\n")
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    assert read_tsv(path).values.tolist() == TRAIN_ROWS


def test_header_without_rows_is_an_empty_frame(write_tsv):
    frame = read_tsv(write_tsv(rows=[]))
    assert list(frame.columns) == TRAIN_HEADER and len(frame) == 0


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\r\n \n"])
def test_empty_file_is_rejected(tmp_path, content):
    path = tmp_path / "train.tsv"
    path.write_bytes(content)
    with pytest.raises(ContractViolation, match="empty file") as caught:
        read_tsv(path)
    assert caught.value.file == str(path) and str(path) in str(caught.value)


def test_stray_tab_in_a_sentence_names_line_and_field_counts(write_tsv):
    rows = [list(row) for row in TRAIN_ROWS]
    rows[3][3] = "Around 0335 GMT ,\tTab shares were up ."  # data row 4 is file line 5
    path = write_tsv(rows)
    with pytest.raises(ContractViolation) as caught:
        read_tsv(path)
    err = caught.value
    assert (err.rule, err.line, err.file) == ("field count", 5, str(path))
    assert str(err) == (f"{path}, line 5: field count: expected 5 tab-separated fields "
                        "as in the header, found 6")


def test_blank_line_in_the_middle_is_a_field_count_error(write_tsv):
    rows = [*TRAIN_ROWS[:2], [""], *TRAIN_ROWS[2:]]  # a blank line 4
    with pytest.raises(ContractViolation, match="line 4: field count: .* found 1") as caught:
        read_tsv(write_tsv(rows))
    assert caught.value.line == 4


def test_every_short_line_is_counted(write_tsv):
    rows = [row[:4] for row in TRAIN_ROWS]
    with pytest.raises(ContractViolation, match=r"line 2: .*found 4 \(and 5 more lines\)"):
        read_tsv(write_tsv(rows))


def test_bytes_that_are_not_utf8_name_their_line(write_tsv):
    path = write_tsv()
    lines = path.read_bytes().split(b"\r\n")
    lines[3] = lines[3].replace(b"advertisement", b"advert\xe9sement")  # Latin-1 e-acute, line 4
    path.write_bytes(b"\r\n".join(lines))
    with pytest.raises(ContractViolation) as caught:
        read_tsv(path)
    assert (caught.value.rule, caught.value.line) == ("utf-8", 4)
    assert f"{path}, line 4: utf-8: bytes b'\\xe9" in str(caught.value)


def test_universal_newlines():
    assert split_lines("a\r\nb\rc\n") == ["a", "b", "c"]
    assert split_lines("a\n\n") == ["a", ""]
