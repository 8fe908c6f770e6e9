"""MRPC-like files and tokenized shard frames, made here: small, valid, and easy to break."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bert_core.features import pack_ids, pad_batch

TRAIN_HEADER = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
TEST_HEADER = ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"]

# Six pairs in GLUE's train.tsv form; the third keeps dev-1's unbalanced quote.
TRAIN_ROWS = [
    ["1", "702876", "702977", "Amrozi accused his brother .", "He called him \" the witness \" ."],
    ["0", "2108705", "2108831", "Yucaipa owned Dominick 's .", "Yucaipa bought Dominick 's ."],
    ["1", "1330381", "1330521", "They had published an advertisement .",
     "\" The foodservice pie business does not fit our long-term growth strategy ."],
    ["0", "3344667", "3344826", "Around 0335 GMT , Tab shares were up .", "Tab shares jumped ."],
    ["1", "1236820", "1236712", "The stock rose $ 2.11 .", "PG&E Corp. shares jumped $ 1.63 ."],
    ["1", "738533", "737951", "Revenue was $ 1.3 billion .", "Revenue rose to $ 1.3 billion ."],
]
TEST_ROWS = [[str(i), *row[1:]] for i, row in enumerate(TRAIN_ROWS)]


def tsv_bytes(header: list[str], rows: list[list[str]], *, bom: bool = True,
              newline: str = "\r\n") -> bytes:
    """A GLUE-style TSV: BOM on the header, CRLF line ends, a final newline."""
    text = "".join("\t".join(fields) + newline for fields in [header, *rows])
    return ("\ufeff" if bom else "").encode() + text.encode("utf-8")


@pytest.fixture
def write_tsv(tmp_path):
    """write_tsv(rows, header=TRAIN_HEADER, name="train.tsv", **tsv_bytes options) -> its path."""
    def write(rows=TRAIN_ROWS, header=TRAIN_HEADER, name="train.tsv", **options) -> Path:
        path = tmp_path / name
        path.write_bytes(tsv_bytes(header, rows, **options))
        return path
    return write


# Shards: a 30-token vocabulary, [CLS] = 2, [SEP] = 3, 16 tokens a row.
CLS, SEP, VOCAB, LENGTH = 2, 3, 30, 16
SHARD = dict(max_seq_length=LENGTH, vocab_size=VOCAB, cls_id=CLS, sep_id=SEP, label_set=(0, 1))


def shard_frame(rows: int = 6, *, labeled: bool = True) -> pd.DataFrame:
    """A shard as the tokenize stage writes it: pairs packed by bert_core, one array per cell."""
    packed = [pack_ids(list(range(5, 7 + i)), list(range(10, 12 + i % 3)), LENGTH, CLS, SEP)
              for i in range(rows)]
    features = pad_batch(packed, LENGTH)
    labels = [i % 2 for i in range(rows)] if labeled else [None] * rows
    return pd.DataFrame({
        "input_ids": list(features.input_ids),
        "input_mask": list(features.input_mask),
        "segment_ids": list(features.segment_ids),
        "label": pd.array(labels, dtype="Int32"),
        "guid": [f"{'train' if labeled else 'test'}-{i}" for i in range(rows)],
        "is_real_example": 1,
    })
