"""TensorFlow's checkpoint files ("tensor bundles") read and written with numpy alone.

A bundle `prefix` is `prefix.index`, a LevelDB-style table (bert_core.sstable) mapping each tensor name to a
BundleEntryProto (dtype, shape, where its bytes lie, their crc32c), plus the key "" holding a
BundleHeaderProto, and `prefix.data-00000-of-00001` with the tensors' raw little-endian bytes.
google-research/bert's releases are such bundles; this module lets machines without TensorFlow
(the JAX GPU hosts) read and write them. Format: tensorflow/core/util/tensor_bundle/.
"""

from __future__ import annotations

import math
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bert_core.sstable import (
    TableError,
    decode_varint,
    encode_varint,
    masked_crc,
    read_table,
    table_bytes,
)

BUNDLE_VERSION = 1  # kTensorBundleVersion, written as the header's producer version

# TensorFlow's DataType enum -> numpy dtype. DT_BFLOAT16 (14) needs ml_dtypes; see _numpy_dtype.
_NUMPY_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
                 8: np.complex64, 9: np.int64, 10: np.bool_, 17: np.uint16, 18: np.complex128,
                 19: np.float16, 22: np.uint32, 23: np.uint64}
DT_STRING, DT_BFLOAT16 = 7, 14


class BundleError(ValueError):
    """A tensor bundle that cannot be read or written; the message names the file and the fault."""


class _Fault(Exception):
    """A fault found deep in the bytes; the reader adds the file name and raises BundleError."""


_FAULTS = (_Fault, TableError)  # the table's own, and its varints' inside the protos


@dataclass(frozen=True)
class BundleEntry:
    """One tensor's BundleEntryProto: its TensorFlow dtype and shape, and where its bytes lie."""

    dtype: int  # TensorFlow DataType enum value
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored
    sliced: bool = False  # a partitioned variable, stored as slices under other keys


class BundleReader:
    """The index of a bundle, read at once; each tensor's bytes are read on `read(name)`."""

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = Path(prefix)
        self.index_path = Path(f"{prefix}.index")
        try:
            records = read_table(self.index_path.read_bytes())
            if not records or records[0][0] != b"":
                raise _Fault("no header entry (the empty key) at the start of the table")
            self.num_shards = _parse_header(records[0][1])
        except _FAULTS as err:
            raise BundleError(f"{self.index_path}: {err}") from None
        self.entries = {}
        for key, value in records[1:]:
            name = key.decode("utf-8", "backslashreplace")  # partitions' slice keys are binary
            try:
                self.entries[name] = _parse_entry(value, self.num_shards)
            except _FAULTS as err:
                raise BundleError(f"{self.index_path}: entry for tensor {name}: {err}") from None
        sliced = sorted(name for name, entry in self.entries.items() if entry.sliced)
        if sliced:
            raise BundleError(f"{self.index_path}: partitioned (sliced) variables are not "
                              f"supported: {sliced[:5]}")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape by name, string tensors included, without reading any data."""
        return {name: entry.shape for name, entry in self.entries.items()}

    def read(self, name: str) -> np.ndarray:
        """The tensor `name`, its crc32c checked against the index."""
        entry = self.entries[name]
        shard = Path(f"{self.prefix}.data-{entry.shard_id:05d}-of-{self.num_shards:05d}")
        try:
            dtype = _numpy_dtype(entry.dtype)
        except _Fault as err:
            raise BundleError(f"{self.index_path}: tensor {name}: {err}") from None
        if math.prod(entry.shape) * dtype.itemsize != entry.size:
            raise BundleError(f"{self.index_path}: tensor {name} of shape {entry.shape} and "
                              f"dtype {dtype} does not fit its entry's {entry.size} bytes")
        value = np.empty(entry.shape, dtype)
        raw = value.reshape(-1).view(np.uint8)  # the array's own buffer, filled in place
        with open(shard, "rb") as f:
            f.seek(entry.offset)
            got = f.readinto(raw)
        if got != entry.size:
            raise BundleError(f"{shard}: truncated: tensor {name} needs bytes {entry.offset}.."
                              f"{entry.offset + entry.size}, the file ends first")
        if masked_crc(raw) != entry.crc32c:
            raise BundleError(f"{shard}: checksum mismatch for tensor {name}: the data is "
                              f"corrupt")
        return value


def read_bundle(prefix: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of the bundle at `prefix`, by name. String tensors (TF2's object-graph
    metadata) are skipped; a corrupt or unsupported bundle raises BundleError."""
    reader = BundleReader(prefix)
    return {name: reader.read(name) for name, entry in reader.entries.items()
            if entry.dtype != DT_STRING}


def write_bundle(weights: dict[str, np.ndarray], prefix: str | os.PathLike) -> Path:
    """Write `weights` as a one-shard bundle TensorFlow's `tf.train.load_checkpoint` reads.

    Both files are written under temporary names; any old index goes first, then the data and
    the index are renamed into place, so a failed write never leaves an index that looks
    complete. Returns `prefix`.
    """
    prefix = Path(prefix)
    tensors = sorted((_name_key(name), name, _tf_dtype(name, np.asarray(value)))
                     for name, value in weights.items())
    prefix.parent.mkdir(parents=True, exist_ok=True)
    index_path, data_path = Path(f"{prefix}.index"), Path(f"{prefix}.data-00000-of-00001")
    tag = f".tmp-{secrets.token_hex(4)}"
    tmp_index, tmp_data = Path(f"{index_path}{tag}"), Path(f"{data_path}{tag}")
    try:
        records, offset = [(b"", _header_bytes())], 0
        with open(tmp_data, "wb") as f:
            for key, name, dtype in tensors:
                value = np.asarray(weights[name], order="C")
                raw = value.reshape(-1).view(np.uint8)
                f.write(raw)
                records.append((key, _entry_bytes(dtype, value.shape, offset, raw.size,
                                                  masked_crc(raw))))
                offset += raw.size
            _sync(f)
        with open(tmp_index, "wb") as f:
            f.write(table_bytes(records))
            _sync(f)
        index_path.unlink(missing_ok=True)
        os.replace(tmp_data, data_path)
        os.replace(tmp_index, index_path)
    finally:
        tmp_data.unlink(missing_ok=True)
        tmp_index.unlink(missing_ok=True)
    return prefix


def _sync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def _numpy_dtype(dtype: int) -> np.dtype:
    if dtype == DT_BFLOAT16:
        try:
            import ml_dtypes
        except ImportError:
            raise _Fault("bfloat16 tensors need the ml_dtypes package") from None
        return np.dtype(ml_dtypes.bfloat16)
    if dtype == DT_STRING:
        raise _Fault("string tensors are not supported")
    if dtype not in _NUMPY_DTYPES:
        raise _Fault(f"TensorFlow dtype {dtype} is not supported")
    return np.dtype(_NUMPY_DTYPES[dtype])


def _tf_dtype(name: str, value: np.ndarray) -> int:
    if value.dtype.name == "bfloat16":
        return DT_BFLOAT16
    for dtype, numpy_dtype in _NUMPY_DTYPES.items():
        if value.dtype == numpy_dtype:  # native byte order only: bundles are little-endian
            return dtype
    raise BundleError(f"tensor {name}: dtype {value.dtype} has no TensorFlow counterpart here "
                      f"(bundles hold numbers in little-endian order)")


def _name_key(name: str) -> bytes:
    if not isinstance(name, str) or not name:
        raise BundleError(f"tensor names must be non-empty strings, got {name!r}")
    return name.encode("utf-8")


# Protocol buffer wire format: each field is a varint tag (number << 3 | wire type), then a varint
# (type 0), 8 bytes (1), a varint length and that many bytes (2), or 4 bytes (5). The varints
# are LevelDB's too, so bert_core.sstable's codec serves both.

def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of each field of a serialized message, in order."""
    fields, pos = [], 0
    while pos < len(buf):
        tag, pos = decode_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = decode_varint(buf, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise _Fault("truncated fixed-width protobuf field")
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        elif wire == 2:
            length, pos = decode_varint(buf, pos)
            if pos + length > len(buf):
                raise _Fault("truncated length-delimited protobuf field")
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise _Fault(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


def _message(buf: bytes, what: str, **names: int) -> dict[str, int | bytes | list]:
    """The fields of a message named by their numbers (`dtype=1`), unknown ones skipped.

    A name ending `_msg` is a sub-message (bytes), one ending `_list` a repeated sub-message (a
    list of bytes, empty when absent); any other is an integer. A wrong wire type is corrupt.
    """
    numbers = {number: name for name, number in names.items()}
    out: dict = {name: [] for name in names if name.endswith("_list")}
    for number, value in _fields(buf):
        name = numbers.get(number)
        if name is None:
            continue
        if isinstance(value, bytes) != name.endswith(("_list", "_msg")):
            raise _Fault(f"{what}: field {name} has the wrong wire type")
        if name.endswith("_list"):
            out[name].append(value)
        else:
            out[name] = value
    return out


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return encode_varint(number << 3 | 2) + encode_varint(len(value)) + value
    return encode_varint(number << 3) + encode_varint(value)



def _parse_header(buf: bytes) -> int:
    """The number of data shards, after checking byte order and version."""
    header = _message(buf, "bundle header", num_shards=1, endianness=2, version_msg=3)
    if header.get("endianness", 0) != 0:
        raise _Fault("big-endian bundles are not supported")
    version = _message(header.get("version_msg", b""), "bundle version", min_consumer=2)
    if version.get("min_consumer", 0) > BUNDLE_VERSION:
        raise _Fault(f"bundle needs reader version {version['min_consumer']}, "
                       f"this reads version {BUNDLE_VERSION}")
    num_shards = header.get("num_shards", 0)
    if num_shards < 1:
        raise _Fault(f"header says {num_shards} data shards")
    return num_shards


def _parse_entry(buf: bytes, num_shards: int) -> BundleEntry:
    entry = _message(buf, "bundle entry", dtype=1, shape_msg=2, shard_id=3, offset=4, size=5,
                     crc32c=6, slices_list=7)
    dims = _message(entry.get("shape_msg", b""), "tensor shape", dim_list=2, unknown_rank=3)
    shape = tuple(_message(dim, "dimension", size=1).get("size", 0) for dim in dims["dim_list"])
    if dims.get("unknown_rank") or any(size >= 1 << 63 for size in shape):
        raise _Fault(f"unknown shape {shape}")
    if entry.get("shard_id", 0) >= num_shards:
        raise _Fault(f"shard {entry['shard_id']} of a {num_shards}-shard bundle")
    return BundleEntry(entry.get("dtype", 0), shape, entry.get("shard_id", 0),
                       entry.get("offset", 0), entry.get("size", 0), entry.get("crc32c", 0),
                       sliced=bool(entry["slices_list"]))


def _header_bytes() -> bytes:
    return _field(1, 1) + _field(3, _field(1, BUNDLE_VERSION))  # one shard, little-endian


def _entry_bytes(dtype: int, shape: tuple[int, ...], offset: int, size: int, crc: int) -> bytes:
    dims = b"".join(_field(2, _field(1, dim)) for dim in shape)
    return (_field(1, dtype) + _field(2, dims) + _field(4, offset) + _field(5, size)
            + encode_varint(6 << 3 | 5) + struct.pack("<I", crc))

