"""GLUE MRPC files: the good fixture passes; each broken copy fails on the rule it breaks."""

from __future__ import annotations

import pickle

import pytest

from data_contracts.errors import ContractViolation
from data_contracts.validate import mrpc_pairs, read_tsv, validate_mrpc_split
from tests.data_contracts.conftest import TEST_HEADER, TEST_ROWS, TRAIN_HEADER, TRAIN_ROWS


def failure_of(path, split="train", **options) -> ContractViolation:
    """The ContractViolation that validating `path` raises (the test fails if none is raised)."""
    report = validate_mrpc_split(path, split, **options)
    assert not report.success
    with pytest.raises(ContractViolation) as caught:
        report.raise_for_failures()
    assert caught.value.file == str(path) and str(path) in str(caught.value)
    return caught.value


def edited(row: int, column: int, value: str) -> list[list[str]]:
    rows = [list(fields) for fields in TRAIN_ROWS]
    rows[row][column] = value
    return rows


def test_good_train_file_passes(write_tsv):
    report = validate_mrpc_split(write_tsv(), "train")
    assert report.success and report.rows == 6 and report.suite == "mrpc_train"
    report.raise_for_failures()
    table = report.table()
    assert {row["success"] for row in table} == {"pass"}
    assert [row["expectation"] for row in table][:2] == [
        "expect_table_columns_to_match_ordered_list", "expect_column_values_to_be_in_set"]


def test_good_test_file_passes(write_tsv):
    report = validate_mrpc_split(write_tsv(TEST_ROWS, TEST_HEADER, "test.tsv", bom=False), "test")
    assert report.success, report.table()


def test_good_dev_file_sharing_no_pair_with_train_passes(write_tsv):
    train = write_tsv(TRAIN_ROWS[:4], name="train.tsv")
    dev = write_tsv(TRAIN_ROWS[4:], name="dev.tsv")
    report = validate_mrpc_split(dev, "dev", train_pairs=mrpc_pairs(read_tsv(train)))
    assert report.success and report.results[-1].column == "pair in train"


@pytest.mark.parametrize("header, rows, expectation, says", [
    pytest.param(["Label", *TRAIN_HEADER[1:]], TRAIN_ROWS,
                 "expect_table_columns_to_match_ordered_list",
                 "column 1: expected 'Quality', found 'Label'", id="column renamed"),
    pytest.param([TRAIN_HEADER[i] for i in (0, 1, 2, 4, 3)],
                 [[row[i] for i in (0, 1, 2, 4, 3)] for row in TRAIN_ROWS],
                 "expect_table_columns_to_match_ordered_list",
                 "column 4: expected '#1 String', found '#2 String'", id="columns reordered"),
    pytest.param(TRAIN_HEADER[:4], [row[:4] for row in TRAIN_ROWS],
                 "expect_table_columns_to_match_ordered_list",
                 "column 5: expected '#2 String', missing", id="column missing"),
    pytest.param(TRAIN_HEADER, edited(2, 0, "2"), "expect_column_values_to_be_in_set",
                 "on Quality (Quality is 0 or 1): 1 failing row, e.g. row 3 (line 4): '2'",
                 id="label 2"),
    pytest.param(TRAIN_HEADER, edited(4, 4, ""), "expect_column_values_to_match_regex",
                 "on #2 String (#2 String is not blank): 1 failing row, e.g. row 5 (line 6): ''",
                 id="empty sentence"),
    pytest.param(TRAIN_HEADER, edited(1, 1, "21O8705"), "expect_column_values_to_match_regex",
                 "on #1 ID (#1 ID is a positive integer): 1 failing row, e.g. row 2 (line 3): "
                 "'21O8705'", id="id not an integer"),
    pytest.param(TRAIN_HEADER, [*TRAIN_ROWS, ["0", *TRAIN_ROWS[0][1:3], "a .", "b ."]],
                 "expect_compound_columns_to_be_unique",
                 "on (#1 ID, #2 ID) (no (#1 ID, #2 ID) pair appears twice): 2 failing rows, "
                 "e.g. row 1 (line 2): {'#1 ID': '702876', '#2 ID': '702977'}",
                 id="duplicate pair"),
])
def test_broken_copy_fails_on_the_rule_it_breaks(write_tsv, header, rows, expectation, says):
    err = failure_of(write_tsv(rows, header))
    assert expectation in {failure.expectation for failure in err.failures}
    assert says in str(err)


def test_row_count_outside_bounds_fails(write_tsv):
    err = failure_of(write_tsv(), min_rows=10, max_rows=20)
    assert [f.expectation for f in err.failures] == ["expect_table_row_count_to_be_between"]
    assert "(between 10 and 20 rows): observed 6" in str(err)


def test_dev_pair_also_in_train_fails(write_tsv):
    train = write_tsv(TRAIN_ROWS[:4], name="train.tsv")
    dev = write_tsv([TRAIN_ROWS[4], TRAIN_ROWS[1]], name="dev.tsv")
    err = failure_of(dev, "dev", train_pairs=mrpc_pairs(read_tsv(train)))
    assert [(f.column, f.unexpected_count) for f in err.failures] == [("pair in train", 1)]
    assert "(no (#1 ID, #2 ID) pair is also in train): 1 failing row, e.g. row 2 (line 3)" \
        in str(err)


@pytest.mark.parametrize("content, rule, line", [
    (b"", "empty file", None),
    (b"Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t1\t2\ta\tb\tc\r\n", "field count", 2),
    (b"Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t1\t2\ta\t\xff\r\n", "utf-8", 2),
])
def test_unreadable_file_raises_before_any_expectation(tmp_path, content, rule, line):
    path = tmp_path / "train.tsv"
    path.write_bytes(content)
    with pytest.raises(ContractViolation, match=rule) as caught:
        validate_mrpc_split(path, "train")
    assert (caught.value.rule, caught.value.line, caught.value.failures) == (rule, line, [])


def test_many_failures_show_a_count_and_five_examples(write_tsv):
    rows = [["yes", *row[1:]] for row in TRAIN_ROWS]
    err = failure_of(write_tsv(rows))
    line = next(text for text in str(err).splitlines() if "Quality is 0 or 1" in text)
    assert "6 failing rows" in line and line.count("'yes'") == 5


def test_every_failure_is_listed_with_the_file(write_tsv):
    rows = edited(2, 0, "2")
    rows[0][2] = "-1"
    err = failure_of(write_tsv(rows), min_rows=7)
    assert len(err.failures) == 3
    first_line = str(err).splitlines()[0]
    assert first_line.endswith("3 of 8 expectations of suite mrpc_train failed (6 rows):")


def test_contract_violation_survives_pickling(write_tsv):
    """Prefect pickles a failed task's exception; file and failures must come back."""
    err = failure_of(write_tsv(edited(2, 0, "2")))
    again = pickle.loads(pickle.dumps(err))
    assert (str(again), again.file, again.failures) == (str(err), err.file, err.failures)


def test_train_pairs_only_for_other_splits(write_tsv):
    with pytest.raises(ValueError, match="not train itself"):
        validate_mrpc_split(write_tsv(), "train", train_pairs=set())
    with pytest.raises(ValueError, match="split must be one of"):
        validate_mrpc_split(write_tsv(), "validation")


def test_test_split_index_must_be_a_non_negative_integer(write_tsv):
    rows = [list(row) for row in TEST_ROWS]
    rows[5][0] = "-5"
    err = failure_of(write_tsv(rows, TEST_HEADER, "test.tsv"), "test")
    assert "on index (index is a non-negative integer): 1 failing row, e.g. row 6 (line 7): '-5'" \
        in str(err)
