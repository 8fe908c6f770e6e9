"""Real GLUE MRPC in ../shared keeps its contracts (skipped when ../shared is absent)."""

from __future__ import annotations

import pandas as pd
import pytest

from bert_core.features import encode_pairs
from bert_core.tokenization import FullTokenizer
from data_contracts.validate import (mrpc_pairs, read_tsv, validate_mrpc_split,
                                     validate_shard_frame)

ROWS = {"train": 3668, "dev": 408, "test": 1725}


@pytest.mark.shared
def test_glue_mrpc_splits_pass(shared):
    folder = shared / "data" / "mrpc"
    train_pairs = mrpc_pairs(read_tsv(folder / "train.tsv"))
    for split, rows in ROWS.items():
        pairs = train_pairs if split != "train" else None
        report = validate_mrpc_split(folder / f"{split}.tsv", split, min_rows=rows, max_rows=rows,
                                     train_pairs=pairs)
        report.raise_for_failures()
        assert report.rows == rows
        assert len(report.results) == 8 + (pairs is not None)


@pytest.mark.shared
def test_real_dev_pairs_packed_by_bert_core_keep_the_shard_contract(shared, shared_vocab):
    dev = read_tsv(shared / "data" / "mrpc" / "dev.tsv")
    tokenizer = FullTokenizer(shared_vocab)
    features = encode_pairs(tokenizer, list(dev["#1 String"]), list(dev["#2 String"]), 128)
    frame = pd.DataFrame({name: list(array) for name, array in features.as_dict().items()})
    frame["label"] = dev["Quality"].astype(int).to_numpy()
    cls_id, sep_id = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    report = validate_shard_frame(frame, file="dev shards", max_seq_length=128,
                                  vocab_size=len(tokenizer.vocab), cls_id=cls_id, sep_id=sep_id,
                                  expected_rows=ROWS["dev"])
    report.raise_for_failures()
