"""FullTokenizer's word memo: bounded however many distinct words it is sent, keeping the ones
in use, and never changing an id."""

from __future__ import annotations

import csv
import pickle

import pytest

from bert_core.tokenization import FullTokenizer

VOCAB = ["[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un", "runn", "##ing", ","]


def tokenizer(memo_words: int | None) -> FullTokenizer:
    return FullTokenizer.from_tokens(VOCAB, memo_words=memo_words)


def test_the_memo_never_holds_more_words_than_it_is_given():
    tok = tokenizer(memo_words=100)
    for i in range(5000):  # a stream of new words, as a public endpoint may be sent
        assert tok.encode(f"running want{i}") == [8, 9, 0]  # want0 ... no such word
        assert len(tok.memo) <= 100
    assert len(tok.memo) >= 50


def test_a_word_in_steady_use_is_not_forgotten():
    tok = tokenizer(memo_words=10)
    computed = []
    compute = tok.memo.compute
    tok.memo.compute = lambda word: computed.append(word) or compute(word)
    for i in range(200):
        tok.encode(f"unwanted new{i}")  # "unwanted" comes back within every 2 new words
    assert computed.count("unwanted") == 1 and len(computed) == 201


def test_no_memo_and_an_unbounded_memo_give_the_same_ids():
    texts = ["UNwant\u00e9d,running", "wa wa wanted", "un , runn", "x" * 201, ""] * 3
    expected = [tokenizer(0).encode(t) for t in texts]
    for memo_words in (0, 1, 2, 3, None):
        tok = tokenizer(memo_words)
        assert [tok.encode(t) for t in texts] == expected, memo_words
        assert [tok.tokenize(t) for t in texts] == [tok.convert_ids_to_tokens(e) for e in expected]
    assert len(tokenizer(0).memo) == 0


def test_a_pickled_tokenizer_keeps_its_memo_bound():
    tok = tokenizer(memo_words=4)
    tok.encode("want wanted")
    copy = pickle.loads(pickle.dumps(tok))
    assert copy.encode("unwanted running") == [7, 4, 5, 8, 9]
    assert copy.memo.size == 4 and copy.memo.compute.__self__ is copy


@pytest.mark.shared
def test_a_small_memo_gives_the_ids_of_an_unbounded_one_on_mrpc(shared, shared_vocab):
    """MRPC train's 7,336 sentences through a memo far smaller than their 15k distinct words."""
    with open(shared / "data" / "mrpc" / "train.tsv", encoding="utf-8-sig") as f:
        sentences = [s for row in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
                     for s in row[3:5]]
    small, unbounded = (FullTokenizer(shared_vocab, memo_words=n) for n in (500, None))
    assert [small.encode(s) for s in sentences] == [unbounded.encode(s) for s in sentences]
    assert len(small.memo) <= 500 < len(unbounded.memo)
