"""Our TFRecords are what TensorFlow writes and reads."""

from __future__ import annotations

import numpy as np
import pytest

from bert_core.records import (
    example_bytes,
    float_features,
    int64_features,
    read_records,
    tfrecord_bytes,
    varint_rows,
)


def batch(rows=5, seq=8, seed=0, scores=False):
    """A shard's columns; with `scores`, float label_ids as a regression task's (STS-B)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 30522, (rows, seq))
    ids[0, :6] = [0, 1, 127, 128, 16383, 16384]  # varint width boundaries
    labels = (rng.uniform(0, 5, rows).astype(np.float32) if scores
              else rng.integers(0, 2, rows))
    return {"input_ids": ids, "input_mask": np.ones((rows, seq), np.int64),
            "segment_ids": rng.integers(0, 2, (rows, seq)),
            "label_ids": labels, "is_real_example": np.ones(rows, np.int64)}


def test_varints():
    assert varint_rows(np.array([[0, 1, 127, 128, 300, 2**35]])) == [
        b"\x00\x01\x7f\x80\x01\xac\x02\x80\x80\x80\x80\x80\x01"]


def _tf_feature(tf, values: np.ndarray):
    values = np.atleast_1d(values).tolist()
    if isinstance(values[0], float):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


@pytest.mark.parametrize("scores", [False, True])
def test_examples_match_tensorflows_serialization(scores):
    tf = pytest.importorskip("tensorflow")
    features = batch(scores=scores)
    ours = {k: (float_features if v.dtype.kind == "f" else int64_features)(v.reshape(len(v), -1))
            for k, v in features.items()}
    for row in range(len(features["label_ids"])):
        theirs = tf.train.Example(features=tf.train.Features(feature={
            k: _tf_feature(tf, v[row]) for k, v in features.items()}))
        assert example_bytes({k: rows[row] for k, rows in ours.items()}) == \
            theirs.SerializeToString(deterministic=True)


@pytest.mark.parametrize("scores", [False, True])
def test_tf_data_reads_the_file(tmp_path, scores):
    tf = pytest.importorskip("tensorflow")
    features = batch(scores=scores)
    path = tmp_path / "x.tfrecord"
    path.write_bytes(tfrecord_bytes(features))
    spec = {k: tf.io.FixedLenFeature([8] if v.ndim == 2 else [],
                                     tf.float32 if v.dtype.kind == "f" else tf.int64)
            for k, v in features.items()}
    rows = list(tf.data.TFRecordDataset(str(path)).map(
        lambda r: tf.io.parse_single_example(r, spec)).as_numpy_iterator())
    for name, values in features.items():
        np.testing.assert_array_equal(np.stack([r[name] for r in rows]), values)
    assert rows[0]["label_ids"].dtype == (np.float32 if scores else np.int64)


def test_a_score_is_written_as_float32_bits():
    """A float64 score is stored as the nearest float32, as tf.train.FloatList holds it."""
    [feature] = float_features(np.array([[0.1]]))
    assert feature[-4:] == np.float32(0.1).tobytes()
    with pytest.raises(ValueError, match="2-d"):
        float_features(np.array([0.1]))


def test_corruption_is_detected(tmp_path):
    path = tmp_path / "x.tfrecord"
    good = tfrecord_bytes(batch(rows=2))
    path.write_bytes(good)
    assert len(list(read_records(path))) == 2
    flipped = bytearray(good)
    flipped[40] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum mismatch"):
        list(read_records(path))
    path.write_bytes(good[:-3])
    with pytest.raises(ValueError, match="truncated"):
        list(read_records(path))
