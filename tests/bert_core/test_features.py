"""Pair packing: the golden MRPC pair, run_classifier's truncation rule, batches."""

from __future__ import annotations

import numpy as np
import pytest

from bert_core.features import encode_pairs, pack_ids, truncate_seq_pair
from bert_core.tokenization import FullTokenizer
from tests.conftest import GOLDEN_A, GOLDEN_B, GOLDEN_IDS

CLS, SEP = 101, 102


@pytest.mark.shared
def test_golden_pair_packs_to_the_published_ids(shared_vocab):
    features = encode_pairs(FullTokenizer(shared_vocab), [GOLDEN_A], [GOLDEN_B], 128)
    n = len(GOLDEN_IDS)
    assert features.input_ids.dtype == np.int32 and features.input_ids.shape == (1, 128)
    assert features.input_ids[0].tolist() == GOLDEN_IDS + [0] * (128 - n)
    assert features.input_mask[0].tolist() == [1] * n + [0] * (128 - n)
    assert features.segment_ids[0].tolist() == [0] * 25 + [1] * 19 + [0] * (128 - n)


def test_truncation_drops_from_the_longer_side_and_from_b_on_a_tie():
    a, b = list(range(6)), list(range(10, 13))
    truncate_seq_pair(a, b, 6)
    assert (a, b) == ([0, 1, 2], [10, 11, 12])
    a, b = [1, 2, 3], [4, 5, 6]
    truncate_seq_pair(a, b, 5)
    assert (a, b) == ([1, 2, 3], [4, 5])


def test_pair_fits_in_max_seq_length_with_three_special_tokens():
    ids, segments = pack_ids(list(range(1, 9)), list(range(11, 19)), 10, CLS, SEP)
    assert ids == [CLS, 1, 2, 3, 4, SEP, 11, 12, 13, SEP]
    assert segments == [0] * 6 + [1] * 4


def test_single_sentence_is_cut_to_max_minus_two():
    ids, segments = pack_ids(list(range(1, 20)), None, 8, CLS, SEP)
    assert ids == [CLS, 1, 2, 3, 4, 5, 6, SEP] and segments == [0] * 8


def test_empty_second_sentence_packs_as_a_single_sentence():
    """run_classifier tests `if tokens_b:`, so b that tokenizes to nothing adds no [SEP]."""
    assert pack_ids([5, 6], [], 8, CLS, SEP) == ([CLS, 5, 6, SEP], [0, 0, 0, 0])


def test_batch_is_padded_with_zeros():
    tok = FullTokenizer.from_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b", "c"])
    features = encode_pairs(tok, ["a b", "c"], ["c", "a a a a a a"], 6)
    assert features.input_ids.tolist() == [[2, 4, 5, 3, 6, 3], [2, 6, 3, 4, 4, 3]]
    single = encode_pairs(tok, ["a", "zzz"], None, 6)
    assert single.input_ids.tolist() == [[2, 4, 3, 0, 0, 0], [2, 1, 3, 0, 0, 0]]
    assert single.input_mask.tolist() == [[1, 1, 1, 0, 0, 0]] * 2
    assert single.segment_ids.sum() == 0


def test_mismatched_batch_lengths_are_an_error():
    tok = FullTokenizer.from_tokens(["[UNK]", "[CLS]", "[SEP]"])
    with pytest.raises(ValueError, match="2 first sentences but 1 second"):
        encode_pairs(tok, ["a", "b"], ["c"], 8)
