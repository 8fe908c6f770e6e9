"""FullTokenizer against google-research/bert's own unit cases and the golden MRPC pair."""

from __future__ import annotations

import csv

import pytest

from bert_core import tokenization as tk
from bert_core.tokenization import BasicTokenizer, FullTokenizer, WordpieceTokenizer

# The vocab of google-research/bert's tokenization_test.py.
VOCAB = ["[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un", "runn", "##ing", ","]


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(t + "\n" for t in VOCAB), encoding="utf-8")
    return FullTokenizer(path)


def test_full_tokenizer_original_case(small):
    tokens = small.tokenize("UNwant\u00E9d,running")
    assert tokens == ["un", "##want", "##ed", ",", "runn", "##ing"]
    assert small.convert_tokens_to_ids(tokens) == [7, 4, 5, 10, 8, 9]
    assert small.convert_ids_to_tokens([7, 4, 5, 10, 8, 9]) == tokens
    assert small.encode("UNwant\u00E9d,running") == [7, 4, 5, 10, 8, 9]


def test_chinese_characters_are_split():
    assert BasicTokenizer().tokenize("ah\u535A\u63A8zz") == ["ah", "\u535A", "\u63A8", "zz"]


def test_basic_lower_case():
    basic = BasicTokenizer(do_lower_case=True)
    assert basic.tokenize(" \tHeLLo!how  \n Are yoU?  ") == ["hello", "!", "how", "are", "you", "?"]
    assert basic.tokenize("H\u00E9llo") == ["hello"]


def test_basic_keeps_case_and_accents_without_lower_case():
    basic = BasicTokenizer(do_lower_case=False)
    assert basic.tokenize(" \tHeLLo!how  \n Are yoU?  ") == ["HeLLo", "!", "how", "Are", "yoU", "?"]
    assert basic.tokenize("H\u00E9llo") == ["H\u00E9llo"]


def test_wordpiece_original_cases():
    wordpiece = WordpieceTokenizer({t: i for i, t in enumerate(VOCAB)})
    assert wordpiece.tokenize("") == []
    assert wordpiece.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert wordpiece.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]


def test_word_over_200_chars_is_one_unk(small):
    assert small.tokenize("want" * 50) == ["want"] + ["##want"] * 49  # 200 chars: still split
    assert small.tokenize("want" * 50 + "s") == ["[UNK]"]  # 201 chars
    assert small.tokenize("runn " + "want" * 51) == ["runn", "[UNK]"]


@pytest.mark.parametrize("char,expected", [(" ", True), ("\t", True), ("\r", True), ("\n", True),
                                           ("\u00A0", True), ("A", False), ("-", False)])
def test_is_whitespace(char, expected):
    assert tk._is_whitespace(char) is expected


@pytest.mark.parametrize("char,expected", [("\u0005", True), ("\u200b", True), ("A", False),
                                           (" ", False), ("\t", False), ("\r", False)])
def test_is_control(char, expected):
    assert tk._is_control(char) is expected


@pytest.mark.parametrize("char,expected", [("-", True), ("$", True), ("`", True), (".", True),
                                           ("\u2014", True), ("\u00BF", True), ("A", False),
                                           (" ", False)])
def test_is_punctuation(char, expected):
    assert tk._is_punctuation(char) is expected


def test_clean_text_drops_nul_replacement_and_format_chars():
    basic = BasicTokenizer()
    assert basic.tokenize("a\x00b\ufffdc\u200bd e\u00A0f") == ["abcd", "e", "f"]


def test_vocab_id_is_stripped_line_number(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[PAD]\r\n  spaced  \n\n[UNK]")  # CRLF, padding, an empty line, no final \n
    assert tk.load_vocab(path) == {"[PAD]": 0, "spaced": 1, "": 2, "[UNK]": 3}


def test_memoised_words_give_the_same_tokens(small):
    text = "unwanted running, UNWANTED running"
    first = small.tokenize(text)
    assert small.tokenize(text) == first
    assert small.encode(text) == small.convert_tokens_to_ids(first)


@pytest.mark.shared
def test_golden_pair_tokens(shared_vocab):
    from tests.conftest import GOLDEN_A, GOLDEN_B

    tok = FullTokenizer(shared_vocab, do_lower_case=True)
    expected = ("he said the foods ##er ##vic ##e pie business doesn ' t fit the company ' s "
                "long - term growth strategy .").split()
    assert tok.tokenize(GOLDEN_A) == expected
    assert tok.tokenize(GOLDEN_B)[:4] == ['"', "the", "foods", "##er"]


@pytest.mark.shared
@pytest.mark.slow
def test_every_mrpc_pair_matches_the_tokenizers_library(shared, shared_vocab):
    """An independent implementation of the same algorithm agrees id for id on all 5,801 pairs."""
    tokenizers = pytest.importorskip("tokenizers")
    fast = tokenizers.BertWordPieceTokenizer(str(shared_vocab), lowercase=True)
    ours = FullTokenizer(shared_vocab)
    sentences = []
    for split in ("train", "dev", "test"):
        with open(shared / "data" / "mrpc" / f"{split}.tsv", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        sentences += [s for row in rows for s in row[3:5]]
    assert len(sentences) == 2 * 5801
    mismatches = [s for s, enc in zip(sentences, fast.encode_batch(sentences, add_special_tokens=False))
                  if ours.encode(s) != enc.ids]
    assert mismatches == []
