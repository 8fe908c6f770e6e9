"""TFRecord files of `tf.train.Example`s, as run_classifier's `file_based_convert_examples_to_features`
writes them, without importing TensorFlow.

Each record holds int64 features `input_ids`, `input_mask`, `segment_ids`, `label_ids` and
`is_real_example`; a float column (a regression task's `label_ids`) is a float_list instead. The
protobuf bytes are built with numpy (varints for a whole shard at once, floats as packed
little-endian float32), the framing is TFRecord's: length, masked crc32c of the length, data,
masked crc32c of the data.
`tf.data.TFRecordDataset` + `tf.io.parse_single_example` read them back (see the tests).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping
from functools import lru_cache

import google_crc32c
import numpy as np

RECORD_FEATURES = ("input_ids", "input_mask", "segment_ids", "label_ids", "is_real_example")


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One TFRecord: uint64 length, its masked crc, the data, the data's masked crc."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", masked_crc32c(length)), data,
                     struct.pack("<I", masked_crc32c(data))))


@lru_cache(maxsize=1 << 16)
def _varint(n: int) -> bytes:
    """A protobuf varint; cached, since lengths repeat from record to record."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def varint_rows(values: np.ndarray) -> list[bytes]:
    """Protobuf varints of a (rows, n) array of non-negative ints, one bytes object per row.

    >>> varint_rows(np.array([[1, 300]]))
    [b'\\x01\\xac\\x02']
    """
    values = np.asarray(values, dtype=np.uint64)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-d array, got shape {values.shape}")
    width = max(1, (int(values.max(initial=0)).bit_length() + 6) // 7)
    shifts = np.arange(width, dtype=np.uint64) * np.uint64(7)
    groups = (values[..., None] >> shifts) & np.uint64(0x7F)  # (rows, n, width) 7-bit groups
    needed = (values[..., None] >> shifts) > 0  # group k is written if value >> 7k is non-zero
    needed[..., 0] = True
    more = np.zeros_like(needed)
    more[..., :-1] = needed[..., 1:]  # continuation bit when a further group follows
    encoded = (groups | (more.astype(np.uint64) << np.uint64(7))).astype(np.uint8)
    buffer = encoded[needed].tobytes()
    ends = np.cumsum(needed.reshape(len(values), -1).sum(axis=1)).tolist()
    return [buffer[start:end] for start, end in zip([0, *ends[:-1]], ends)]


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


@lru_cache(maxsize=64)
def _key_field(key: str) -> bytes:
    return _field(1, key.encode())


# tf.train.Feature's oneof: bytes_list = 1, float_list = 2, int64_list = 3; each list's
# `repeated value = 1` is packed.
FLOAT_LIST, INT64_LIST = 2, 3


def int64_features(values: np.ndarray) -> list[bytes]:
    """A serialized tf.train.Feature (int64_list) per row of a (rows, n) array of non-negative
    ints.

    >>> int64_features(np.array([[1, 300]]))
    [b'\\x1a\\x05\\n\\x03\\x01\\xac\\x02']
    """
    return [_field(INT64_LIST, _field(1, payload)) for payload in varint_rows(values)]


def float_features(values: np.ndarray) -> list[bytes]:
    """A serialized tf.train.Feature (float_list) per row of a (rows, n) float array, each value
    as float32.

    >>> float_features(np.array([[1.0]]))
    [b'\\x12\\x06\\n\\x04\\x00\\x00\\x80?']
    """
    rows = np.ascontiguousarray(values, dtype="<f4")
    if rows.ndim != 2:
        raise ValueError(f"expected a 2-d array, got shape {rows.shape}")
    return [_field(FLOAT_LIST, _field(1, row.tobytes())) for row in rows]


def example_bytes(features: Mapping[str, bytes]) -> bytes:
    """A serialized tf.train.Example from each key's serialized tf.train.Feature (keys sorted).

    Example{features: Features{feature: map<key, Feature>}}
    """
    entries = [_field(1, _key_field(key) + _field(2, feature))  # map entry {key = 1, value = 2}
               for key, feature in sorted(features.items())]
    return _field(1, b"".join(entries))


def tfrecord_bytes(features: Mapping[str, np.ndarray]) -> bytes:
    """The TFRecord file content for a batch: each value a (rows, n) or (rows,) array, written
    as int64_list, or as float_list when its dtype is floating."""
    columns = {}
    for name, values in features.items():
        values = np.asarray(values)
        encode = float_features if values.dtype.kind == "f" else int64_features
        columns[name] = encode(values.reshape(len(values), -1))
    rows = len(next(iter(columns.values()))) if columns else 0
    return b"".join(frame_record(example_bytes({k: col[i] for k, col in columns.items()}))
                    for i in range(rows))


def read_records(path: str | os.PathLike) -> Iterator[bytes]:
    """The payload of each record, with both checksums verified."""
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset < len(data):
        if offset + 12 > len(data):
            raise ValueError(f"{path}: truncated record header at byte {offset}")
        length_bytes = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        (length_crc,) = struct.unpack("<I", data[offset + 8:offset + 12])
        start, end = offset + 12, offset + 12 + length
        if length_crc != masked_crc32c(length_bytes) or end + 4 > len(data):
            raise ValueError(f"{path}: corrupt or truncated record at byte {offset}")
        payload = data[start:end]
        if struct.unpack("<I", data[end:end + 4])[0] != masked_crc32c(payload):
            raise ValueError(f"{path}: data checksum mismatch in record at byte {offset}")
        yield payload
        offset = end + 4
