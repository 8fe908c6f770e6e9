"""Our TFRecords are what TensorFlow writes and reads."""

from __future__ import annotations

import numpy as np
import pytest

from bert_core.records import example_bytes, read_records, tfrecord_bytes, varint_rows


def batch(rows=5, seq=8, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 30522, (rows, seq))
    ids[0, :6] = [0, 1, 127, 128, 16383, 16384]  # varint width boundaries
    return {"input_ids": ids, "input_mask": np.ones((rows, seq), np.int64),
            "segment_ids": rng.integers(0, 2, (rows, seq)),
            "label_ids": rng.integers(0, 2, rows), "is_real_example": np.ones(rows, np.int64)}


def test_varints():
    assert varint_rows(np.array([[0, 1, 127, 128, 300, 2**35]])) == [
        b"\x00\x01\x7f\x80\x01\xac\x02\x80\x80\x80\x80\x80\x01"]


def test_examples_match_tensorflows_serialization():
    tf = pytest.importorskip("tensorflow")
    features = batch()
    for row in range(len(features["label_ids"])):
        theirs = tf.train.Example(features=tf.train.Features(feature={
            k: tf.train.Feature(int64_list=tf.train.Int64List(value=np.atleast_1d(v[row]).tolist()))
            for k, v in features.items()}))
        ours = example_bytes({k: varint_rows(np.asarray(v).reshape(len(v), -1))[row]
                              for k, v in features.items()})
        assert ours == theirs.SerializeToString(deterministic=True)


def test_tf_data_reads_the_file(tmp_path):
    tf = pytest.importorskip("tensorflow")
    features = batch()
    path = tmp_path / "x.tfrecord"
    path.write_bytes(tfrecord_bytes(features))
    spec = {k: tf.io.FixedLenFeature([8] if v.ndim == 2 else [], tf.int64)
            for k, v in features.items()}
    rows = list(tf.data.TFRecordDataset(str(path)).map(
        lambda r: tf.io.parse_single_example(r, spec)).as_numpy_iterator())
    for name, values in features.items():
        np.testing.assert_array_equal(np.stack([r[name] for r in rows]), values)


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
