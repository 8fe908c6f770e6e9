"""LevelDB-style sorted string tables (SSTables) of byte keys and values, read and written whole.

A table is data blocks of (key, value) records, an empty metaindex block, an index block mapping
each data block's last key to its BlockHandle (varint offset, varint size), then a 48-byte footer:
the metaindex and index handles padded to 40 bytes, and the magic number. Each block is followed
by a trailer: a compression-type byte (only 0, none, here) and the masked crc32c of the block and
that byte. TensorFlow's checkpoint indexes are such tables (see bert_core.tf_bundle). Format:
leveldb's doc/table_format.md.
"""

from __future__ import annotations

import itertools
import os
import struct

import google_crc32c

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two BlockHandles padded to 40 bytes, then the 8-byte magic
BLOCK_TRAILER_SIZE = 5  # compression type byte + masked crc32c
BLOCK_SIZE = 4096  # TF's default: a data block is closed once it reaches this size
RESTART_INTERVAL = 16  # keys between full (not prefix-compressed) keys in a data block


class TableError(ValueError):
    """Bytes that are not a well-formed table (or varint); the message names the fault, and the
    caller, who knows the file, adds its name."""


def masked_crc(data) -> int:
    """crc32c rotated and offset as LevelDB and TF store it (so a crc of crcs stays strong)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    r"""The varint at `pos` and the position after it: 7 bits a byte, low bits first (LevelDB's
    varints are protobuf's).

    >>> decode_varint(b"\x96\x01", 0)
    (150, 2)
    """
    result = shift = 0
    while shift < 64:
        if pos >= len(buf):
            raise TableError("truncated varint")
        byte = buf[pos]
        result, pos, shift = result | (byte & 0x7F) << shift, pos + 1, shift + 7
        if byte < 0x80:
            return result, pos
    raise TableError("varint longer than 10 bytes")


def encode_varint(value: int) -> bytes:
    r"""`value` (non-negative) as a varint.

    >>> encode_varint(150)
    b'\x96\x01'
    """
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_table(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of the table in `data`, in order; keys must strictly increase."""
    if len(data) < FOOTER_SIZE:
        raise TableError(f"{len(data)} bytes is shorter than the {FOOTER_SIZE}-byte table footer")
    footer = data[-FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
        raise TableError("bad table magic number: not a TensorFlow checkpoint index (or other "
                         "LevelDB table), or truncated")
    _, pos = _block_handle(footer, 0)
    index_handle, _ = _block_handle(footer, pos)
    records = []
    for _, handle in _block_records(_block(data, index_handle, "index block")):
        records += _block_records(_block(data, _block_handle(handle, 0)[0], "data block"))
    if any(a[0] >= b[0] for a, b in itertools.pairwise(records)):
        raise TableError("table keys are out of order")
    return records


def table_bytes(records: list[tuple[bytes, bytes]]) -> bytes:
    """An uncompressed table of `records`, whose keys must strictly increase, blocked as
    TensorFlow's TableBuilder does."""
    if any(a[0] >= b[0] for a, b in itertools.pairwise(records)):
        raise TableError("table keys must strictly increase")
    out, index = bytearray(), _BlockBuilder(restart_interval=1)

    def append_block(block: bytes) -> bytes:
        handle = encode_varint(len(out)) + encode_varint(len(block))
        out.extend(block + b"\0" + struct.pack("<I", masked_crc(block + b"\0")))
        return handle

    block = _BlockBuilder(RESTART_INTERVAL)
    for i, (key, value) in enumerate(records):
        block.add(key, value)
        if block.size() >= BLOCK_SIZE or i == len(records) - 1:
            index.add(block.last_key, append_block(block.finish()))
            block = _BlockBuilder(RESTART_INTERVAL)
    metaindex = append_block(_BlockBuilder(1).finish())
    index_handle = append_block(index.finish())
    return bytes(out) + (metaindex + index_handle).ljust(40, b"\0") + struct.pack("<Q", TABLE_MAGIC)


def _block_handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = decode_varint(buf, pos)
    size, pos = decode_varint(buf, pos)
    return (offset, size), pos


def _block(data: bytes, handle: tuple[int, int], what: str) -> bytes:
    """A block's contents after checking its trailer: crc32c, and no compression."""
    offset, size = handle
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(data) - FOOTER_SIZE:
        raise TableError(f"{what} at {offset}..{end} runs past the end of the file")
    stored = int.from_bytes(data[end + 1:end + BLOCK_TRAILER_SIZE], "little")
    if masked_crc(data[offset:end + 1]) != stored:
        raise TableError(f"{what} at {offset}: checksum mismatch")
    if data[end] != 0:
        raise TableError(f"{what} at {offset} is compressed (type {data[end]}); only "
                         f"uncompressed tables are supported")
    return data[offset:end]


def _block_records(block: bytes) -> list[tuple[bytes, bytes]]:
    """A block's records: each key shares a prefix with the one before (none at restart
    points), then a uint32 offset per restart point and their count end the block."""
    if len(block) < 4:
        raise TableError(f"block of {len(block)} bytes has no restart count")
    num_restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise TableError(f"block of {len(block)} bytes cannot hold {num_restarts} restart points")
    records, key, pos = [], b"", 0
    while pos < limit:
        shared, pos = decode_varint(block, pos)
        unshared, pos = decode_varint(block, pos)
        value_size, pos = decode_varint(block, pos)
        if shared > len(key) or pos + unshared + value_size > limit:
            raise TableError("block record runs past its block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        records.append((key, block[pos:pos + value_size]))
        pos += value_size
    return records


class _BlockBuilder:
    """Records into one block's bytes, prefix-compressing each key against the one before."""

    def __init__(self, restart_interval: int):
        self.restart_interval, self.body, self.restarts = restart_interval, bytearray(), []
        self.count, self.last_key = 0, b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count % self.restart_interval == 0:
            self.restarts.append(len(self.body))
        else:
            shared = len(os.path.commonprefix([self.last_key, key]))
        self.body += (encode_varint(shared) + encode_varint(len(key) - shared)
                      + encode_varint(len(value)) + key[shared:] + value)
        self.count, self.last_key = self.count + 1, key

    def size(self) -> int:
        return len(self.body) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        restarts = self.restarts or [0]
        return bytes(self.body) + struct.pack(f"<{len(restarts) + 1}I", *restarts, len(restarts))
