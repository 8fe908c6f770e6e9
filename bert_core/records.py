"""TFRecord files of `tf.train.Example`s, as run_classifier's `file_based_convert_examples_to_features`
writes them, without importing TensorFlow.

Each record holds int64 features `input_ids`, `input_mask`, `segment_ids`, `label_ids` and
`is_real_example`. The protobuf bytes are built with numpy (varints for a whole shard at once), the
framing is TFRecord's: length, masked crc32c of the length, data, masked crc32c of the data.
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


def example_bytes(packed_features: Mapping[str, bytes]) -> bytes:
    """A serialized tf.train.Example from each feature's packed int64 varints (keys sorted).

    Example{features: Features{feature: map<key, Feature{int64_list: Int64List{value}}>}}
    """
    entries = []
    for key, payload in sorted(packed_features.items()):
        int64_list = b"\x0a" + _varint(len(payload)) + payload  # Int64List.value, packed
        feature = b"\x1a" + _varint(len(int64_list)) + int64_list  # Feature.int64_list = 3
        entry = _key_field(key) + b"\x12" + _varint(len(feature)) + feature  # map entry
        entries.append(b"\x0a" + _varint(len(entry)) + entry)
    return _field(1, b"".join(entries))


def tfrecord_bytes(features: Mapping[str, np.ndarray]) -> bytes:
    """The TFRecord file content for a batch: each value a (rows, n) or (rows,) int array."""
    columns = {name: varint_rows(np.asarray(v).reshape(len(v), -1)) for name, v in features.items()}
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
