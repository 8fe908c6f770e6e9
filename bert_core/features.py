"""Pack sentence pairs into BERT's fixed-length input features, as run_classifier does.

    [CLS] a1 a2 [SEP] b1 b2 b3 [SEP] 0 0 ...   input_ids
      1   1  1    1   1  1  1    1   0 0 ...   input_mask
      0   0  0    0   1  1  1    1   0 0 ...   segment_ids

A pair longer than `max_seq_length - 3` tokens is truncated by dropping the last token of the longer
side (of b on a tie) until it fits; a single sentence is cut to `max_seq_length - 2`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bert_core.tokenization import FullTokenizer

FEATURE_NAMES = ("input_ids", "input_mask", "segment_ids")  # the model's inputs, in this order
PARAPHRASE = 1  # MRPC's label "1": the two sentences are paraphrases (GLUE's F1 is of this class)

CLS, SEP = "[CLS]", "[SEP]"


@dataclass(frozen=True)
class Features:
    """A batch of packed examples: three int32 arrays of shape (batch, max_seq_length)."""

    input_ids: np.ndarray
    input_mask: np.ndarray
    segment_ids: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids, "input_mask": self.input_mask,
                "segment_ids": self.segment_ids}


def truncate_seq_pair(a: list, b: list, max_length: int) -> None:
    """Pop from the end of the longer list (b on a tie) until both fit in `max_length`, in place.

    >>> a, b = [1, 2, 3, 4], [5, 6, 7]
    >>> truncate_seq_pair(a, b, 5); a, b
    ([1, 2, 3], [5, 6])
    """
    while len(a) + len(b) > max_length:
        (a if len(a) > len(b) else b).pop()


def pack_ids(ids_a: Sequence[int], ids_b: Sequence[int] | None, max_seq_length: int,
             cls_id: int, sep_id: int) -> tuple[list[int], list[int]]:
    """One example's unpadded (ids, segment ids). An empty `ids_b` counts as no second sentence,
    as in run_classifier (`if tokens_b:`).

    >>> pack_ids([7, 8], [9], 8, cls_id=101, sep_id=102)
    ([101, 7, 8, 102, 9, 102], [0, 0, 0, 0, 1, 1])
    """
    a = list(ids_a)
    b = list(ids_b) if ids_b else []
    if b:
        truncate_seq_pair(a, b, max_seq_length - 3)
    else:
        del a[max_seq_length - 2:]
    ids = [cls_id, *a, sep_id]
    segments = [0] * len(ids)
    if b:
        ids += [*b, sep_id]
        segments += [1] * (len(b) + 1)
    return ids, segments


def pad_batch(packed: Sequence[tuple[list[int], list[int]]], max_seq_length: int) -> Features:
    """Zero-pad packed examples into one `Features` batch; the mask marks the real tokens."""
    shape = (len(packed), max_seq_length)
    input_ids = np.zeros(shape, np.int32)
    input_mask = np.zeros(shape, np.int32)
    segment_ids = np.zeros(shape, np.int32)
    for row, (ids, segments) in enumerate(packed):
        n = len(ids)
        input_ids[row, :n] = ids
        input_mask[row, :n] = 1
        segment_ids[row, :n] = segments
    return Features(input_ids, input_mask, segment_ids)


def encode_pairs(tokenizer: FullTokenizer, texts_a: Sequence[str],
                 texts_b: Sequence[str] | None, max_seq_length: int) -> Features:
    """Tokenize and pack a batch of sentence pairs (or single sentences when `texts_b` is None)."""
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length must be at least 3, got {max_seq_length}")
    if texts_b is not None and len(texts_b) != len(texts_a):
        raise ValueError(f"got {len(texts_a)} first sentences but {len(texts_b)} second ones")
    cls_id, sep_id = tokenizer.convert_tokens_to_ids([CLS, SEP])
    seconds = texts_b if texts_b is not None else [None] * len(texts_a)
    packed = [pack_ids(tokenizer.encode(a), tokenizer.encode(b) if b else None,
                       max_seq_length, cls_id, sep_id)
              for a, b in zip(texts_a, seconds)]
    return pad_batch(packed, max_seq_length)
