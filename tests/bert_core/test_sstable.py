"""bert_core.sstable on its own: byte keys and values round trip across many blocks, and damage is
named by the block it hits."""

from __future__ import annotations

import pytest

from bert_core.sstable import (
    BLOCK_SIZE,
    FOOTER_SIZE,
    TableError,
    decode_varint,
    encode_varint,
    read_table,
    table_bytes,
)


def many_records() -> list[tuple[bytes, bytes]]:
    """Shared prefixes (for prefix compression), binary keys, empty and large values."""
    records = [(b"", b"header")]
    records += [(f"layer_{i:04d}/kernel".encode(), bytes([i % 256]) * (i % 50)) for i in range(600)]
    records += [(b"\xff\x00binary", b""), (b"\xff\xffbig", bytes(range(256)) * 40)]
    return sorted(records)


def test_many_records_round_trip_across_blocks():
    records = many_records()
    data = table_bytes(records)
    assert len(data) > 4 * BLOCK_SIZE  # several data blocks, each with several restart points
    assert read_table(data) == records


def test_empty_table_round_trips():
    assert read_table(table_bytes([])) == []


def test_unsorted_keys_are_refused():
    with pytest.raises(TableError, match="keys must strictly increase"):
        table_bytes([(b"b", b"1"), (b"a", b"2")])


def test_corrupted_block_trailer_is_named():
    data = bytearray(table_bytes([(b"a", b"1"), (b"b", b"2")]))
    data_block_end = data[-FOOTER_SIZE] - 5  # the one data block sits at 0, before the metaindex
    data[data_block_end + 2] ^= 0x01  # a byte of its masked crc32c
    with pytest.raises(TableError, match="data block at 0: checksum mismatch"):
        read_table(bytes(data))


def test_varints_round_trip_and_truncation_is_named():
    for value in (0, 1, 127, 128, 150, 2**32, 2**64 - 1):
        encoded = encode_varint(value)
        assert decode_varint(b"x" + encoded, 1) == (value, 1 + len(encoded))
    with pytest.raises(TableError, match="truncated varint"):
        decode_varint(encode_varint(2**40)[:-1], 0)
