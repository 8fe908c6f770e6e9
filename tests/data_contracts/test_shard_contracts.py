"""Tokenized shards: a frame packed by bert_core passes; each broken rule fails on its own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_contracts.errors import ContractViolation
from data_contracts.validate import validate_shard_frame
from tests.data_contracts.conftest import CLS, LENGTH, SEP, SHARD, VOCAB, shard_frame


def validate(frame: pd.DataFrame, *, expected_rows: int = 6, labeled: bool = True):
    return validate_shard_frame(frame, file="shards/train-00000.parquet", **SHARD,
                                expected_rows=expected_rows, labeled=labeled)


def write_parquet(frame: pd.DataFrame, path) -> None:
    """The shard layout: list<int32> features, int32 label (null when unlabeled)."""
    ints = pa.list_(pa.int32())
    table = pa.table({
        "input_ids": pa.array([row.tolist() for row in frame["input_ids"]], ints),
        "input_mask": pa.array([row.tolist() for row in frame["input_mask"]], ints),
        "segment_ids": pa.array([row.tolist() for row in frame["segment_ids"]], ints),
        "label": pa.array(frame["label"].astype(object).where(frame["label"].notna(), None),
                          pa.int32()),
        "guid": pa.array(frame["guid"], pa.string()),
        "is_real_example": pa.array(frame["is_real_example"], pa.int64()),
    })
    pq.write_table(table, path)


def test_good_frame_passes():
    report = validate(shard_frame())
    assert report.success and report.rows == 6 and report.suite == "shards"
    report.raise_for_failures()


def test_good_shards_read_back_from_parquet_pass(tmp_path):
    for labeled in (True, False):
        path = tmp_path / f"{labeled}.parquet"
        write_parquet(shard_frame(labeled=labeled), path)
        report = validate(pd.read_parquet(path), labeled=labeled)
        assert report.success, report.table()


def test_unlabeled_split_with_null_labels_passes_but_a_labeled_one_fails():
    frame = shard_frame(labeled=False)
    assert frame["label"].isna().all()
    assert validate(frame, labeled=False).success
    failures = validate(frame, labeled=True).failures
    assert [(f.column, f.unexpected_count) for f in failures] == [("label", 6)]
    assert failures[0].rule == "every row has a label"


def broken(row: int, column: str, edit) -> pd.DataFrame:
    """The good frame with one cell replaced by edit(copy of that cell)."""
    frame = shard_frame()
    frame.at[row, column] = edit(frame.at[row, column].copy())
    return frame


def set_at(index, value):
    def edit(cell):
        cell[index] = value
        return cell
    return edit


first_sep = int(np.flatnonzero(shard_frame().at[2, "input_ids"] == SEP)[0])


@pytest.mark.parametrize("frame, column, rule", [
    pytest.param(broken(2, "input_ids", lambda ids: ids[:LENGTH - 1]), "n_ids",
                 f"every row has {LENGTH} input_ids", id="too few ids"),
    pytest.param(broken(2, "input_mask", lambda mask: np.append(mask, 0)), "n_mask",
                 "input_mask has as many entries as input_ids", id="mask too long"),
    pytest.param(broken(2, "input_ids", set_at(0, 7)), "first_id",
                 f"every row starts with [CLS] (id {CLS})", id="no CLS"),
    pytest.param(broken(2, "input_ids", set_at(first_sep, 9)), "n_sep",
                 f"every row holds exactly 2 [SEP] (id {SEP}), one per sentence", id="one SEP"),
    pytest.param(broken(2, "input_mask", set_at(1, 0)), "mask_is_prefix",
                 "input_mask is ones then zeros, starting with a one", id="hole in the mask"),
    pytest.param(broken(2, "segment_ids", set_at(LENGTH - 1, 1)), "segments_valid",
                 "segment_ids are 0 or 1, and 0 wherever input_mask is 0", id="segment on padding"),
    pytest.param(broken(2, "input_ids", set_at(1, VOCAB)), "max_id",
                 f"every id is below vocab_size {VOCAB}", id="id out of vocab"),
    pytest.param(broken(2, "input_ids", set_at(1, -5)), "min_id", "no id is negative",
                 id="negative id"),
])
def test_broken_row_fails_on_its_rule(frame, column, rule):
    report = validate(frame)
    assert [(f.column, f.rule, f.unexpected_count) for f in report.failures] == [(column, rule, 1)]
    with pytest.raises(ContractViolation, match=r"shards/train-00000\.parquet: 1 of 12") as caught:
        report.raise_for_failures()
    assert f"on {column} ({rule}): 1 failing row, e.g. row 3: " in str(caught.value)


def test_label_outside_the_label_set_fails():
    frame = shard_frame()
    frame.loc[4, "label"] = 2
    failures = validate(frame).failures
    assert [(f.column, f.rule, f.examples) for f in failures] == [
        ("label", "label is one of (0, 1)", ["row 5: 2"])]


def test_wrong_row_count_fails():
    failures = validate(shard_frame(), expected_rows=7).failures
    assert [(f.expectation, f.examples) for f in failures] == [
        ("expect_table_row_count_to_equal", ["observed 6"])]


def test_frame_without_the_feature_lists_is_rejected():
    with pytest.raises(ContractViolation, match="columns: no column input_mask") as caught:
        validate(shard_frame().drop(columns="input_mask"))
    assert caught.value.file == "shards/train-00000.parquet"
