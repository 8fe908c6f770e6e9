"""The backend-neutral training input: run_classifier's shuffled batches planned up front."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bert_core.features import Features
from bert_core.inputs import (
    Split,
    TrainBatches,
    balanced_weights,
    read_split,
    shuffled_rows,
)


def make_split(n: int = 40, width: int = 16, seed: int = 0) -> Split:
    """`n` rows of real lengths 4..width: ids 2 (CLS) then 5.., zeros past the length."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, width + 1, n)
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(5, 30, (n, width)).astype(np.int32) * mask
    ids[:, 0] = 2
    segments = ((np.arange(width)[None, :] >= lengths[:, None] // 2) * mask).astype(np.int32)
    return Split(Features(ids, mask, segments), rng.integers(0, 2, n).astype(np.int32),
                 [f"train-{i}" for i in range(n)])


def test_the_shuffle_is_a_buffer_of_the_given_size_over_the_repeated_rows():
    order = shuffled_rows(50, 200, 10, seed=3)
    assert (order == shuffled_rows(50, 200, 10, seed=3)).all()
    assert not (order == shuffled_rows(50, 200, 10, seed=4)).all()
    # output i is one of the first i + 10 rows of the stream: no row comes out before it is in
    first_seen = {}
    for i, row in enumerate(order.tolist()):
        first_seen.setdefault(row, i)
    assert all(first_seen[row] >= row - 9 for row in first_seen)
    assert any(first_seen[row] != row for row in first_seen)  # and they did move
    assert sorted(first_seen) == list(range(50))  # every row comes out
    assert shuffled_rows(7, 14, 1, seed=0).tolist() == list(range(7)) * 2  # shuffle_buffer 1


def test_full_batches_each_cut_to_its_longest_row():
    split = make_split()
    batches = TrainBatches(split, steps=12, batch_size=8, seed=1)
    assert len(batches.plan) == 12
    for step in range(12):
        [(features, labels)] = batches.batch(step)
        rows, width = batches.plan[step]
        assert features["input_ids"].shape == (8, width) and labels.shape == (8,)
        assert width == split.lengths[rows].max()
        np.testing.assert_array_equal(features["input_mask"],
                                      split.features.input_mask[rows, :width])
    padded = TrainBatches(split, steps=12, batch_size=8, seed=1, padding="max_length")
    assert set(padded.widths) == {16}
    assert all((a[0] == b[0]).all() for a, b in zip(batches.plan, padded.plan))  # same rows


def test_widths_round_up_to_a_multiple_for_compiled_steps():
    batches = TrainBatches(make_split(), steps=12, batch_size=8, seed=1, multiple=8)
    assert set(batches.widths) <= {8, 16} and len(batches.plan) == 12


def test_bucketed_batches_hold_rows_of_their_bucket_only():
    split = make_split(n=80)
    batches = TrainBatches(split, steps=6, batch_size=8, seed=1, bounds=(8, 12))
    for rows, width in batches.plan:
        lower = {8: 0, 12: 8, 16: 12}[width]
        assert ((lower < split.lengths[rows]) & (split.lengths[rows] <= width)).all()


def test_a_resumed_run_sees_the_batches_it_would_have_seen():
    batches = TrainBatches(make_split(), steps=10, batch_size=8, seed=5)
    whole = list(batches.iterate(0))
    resumed = list(batches.iterate(6))
    assert len(whole) == 10 and len(resumed) == 4
    for (a, la), (b, lb) in zip(whole[6:], resumed):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        np.testing.assert_array_equal(la, lb)


def test_micro_batches_split_each_batch_into_equal_parts():
    split = make_split()
    whole = TrainBatches(split, steps=4, batch_size=8, seed=2)
    micro = TrainBatches(split, steps=4, batch_size=8, seed=2, accumulate=2)
    for step in range(4):
        [(features, labels)] = whole.batch(step)
        parts = micro.batch(step)
        assert [p[1].shape for p in parts] == [(4,), (4,)]
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), labels)
        for (part, _), half in zip(parts, (slice(0, 4), slice(4, 8))):
            width = part["input_ids"].shape[1]
            np.testing.assert_array_equal(part["input_ids"], features["input_ids"][half, :width])
    assert len(list(micro.iterate())) == 8
    with pytest.raises(ValueError, match="not a multiple of accumulate_steps"):
        TrainBatches(split, steps=4, batch_size=8, seed=2, accumulate=3)


@pytest.mark.parametrize("regression", [False, True])
def test_read_split_reads_the_parquet_shards_in_manifest_order(tmp_path, regression):
    """Class ids come back int32; a regression task's scores float32, unrounded."""
    split = make_split(n=10)
    labels = split.labels + 0.25 * np.arange(10) if regression else split.labels
    shards = []
    for i, rows in enumerate((slice(0, 6), slice(6, 10), slice(10, 10))):
        name = f"train-{i:05d}-of-00003.parquet"
        table = pa.table({
            **{k: pa.array(v[rows].tolist(), pa.list_(pa.int32()))
               for k, v in split.features.as_dict().items()},
            "label": pa.array(labels[rows], pa.float32() if regression else pa.int32()),
            "guid": split.guids[rows], "is_real_example": pa.array([1] * len(split.guids[rows]),
                                                                    pa.int32())})
        pq.write_table(table, tmp_path / name)
        shards.append({"parquet": name})
    (tmp_path / "manifest.json").write_text(json.dumps({
        "max_seq_length": 16, "regression": regression,
        "splits": {"train": {"labeled": True, "shards": shards}}}))
    read = read_split(tmp_path, "train")
    assert read.guids == split.guids
    assert read.labels.dtype == (np.float32 if regression else np.int32)
    assert read.regression == regression
    np.testing.assert_array_equal(read.labels, labels.astype(read.labels.dtype))
    for name, values in split.features.as_dict().items():
        np.testing.assert_array_equal(getattr(read.features, name), values)


def test_balanced_weights_make_each_class_weigh_alike_in_every_batch_they_ride_in():
    """CoLA-like 3:1 classes: each class's weights sum to n / classes; the batches carry the
    weights of their own rows (and micro-batches theirs), as Keras' third element."""
    split = make_split(n=40)
    labels = np.array([0] * 30 + [1] * 10, np.int32)
    split = Split(split.features, labels, split.guids)
    weights = balanced_weights(labels)
    assert [weights[labels == c].sum() for c in (0, 1)] == pytest.approx([20, 20])
    assert weights[labels == 1][0] == pytest.approx(3 * weights[labels == 0][0])
    batches = TrainBatches(split, steps=5, batch_size=8, seed=1, weights=weights, accumulate=2)
    for step in range(5):
        rows = np.split(batches.plan[step][0], 2)
        for part, (_, part_labels, part_weights) in zip(rows, batches.batch(step)):
            np.testing.assert_array_equal(part_labels, labels[part])
            np.testing.assert_array_equal(part_weights, weights[part])
    assert all(len(b) == 2 for b in TrainBatches(split, steps=5, batch_size=8, seed=1).batch(0))
