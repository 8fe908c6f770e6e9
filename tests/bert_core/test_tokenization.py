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


# The module-level functions of google-research/bert's tokenization.py.

def test_convert_tokens_to_ids_original_case():
    vocab = {token: i for i, token in enumerate(VOCAB[:10])}  # tokenization_test.py's vocab
    ids = tk.convert_tokens_to_ids(vocab, ["un", "##want", "##ed", "runn", "##ing"])
    assert ids == [7, 4, 5, 8, 9]
    inv_vocab = {i: token for token, i in vocab.items()}
    assert tk.convert_ids_to_tokens(inv_vocab, ids) == ["un", "##want", "##ed", "runn", "##ing"]
    assert tk.convert_by_vocab(vocab, []) == []
    with pytest.raises(KeyError):
        tk.convert_by_vocab(vocab, ["unwanted"])  # not a token: tokenize first, as the original


def test_full_tokenizer_vocab_and_inverse(small):
    assert small.vocab == {t: i for i, t in enumerate(VOCAB)}
    assert small.inv_vocab == {i: t for i, t in enumerate(VOCAB)}
    assert small.convert_ids_to_tokens([1, 2]) == tk.convert_ids_to_tokens(small.inv_vocab, [1, 2])


@pytest.mark.parametrize("text,expected", [("caf\u00e9", "caf\u00e9"),
                                           (b"caf\xc3\xa9", "caf\u00e9"), (b"a\xffb", "ab"),
                                           (b"", "")])
def test_convert_to_unicode_and_printable_text(text, expected):
    assert tk.convert_to_unicode(text) == expected
    assert tk.printable_text(text) == expected


def test_convert_to_unicode_rejects_other_types():
    with pytest.raises(ValueError, match="Unsupported string type"):
        tk.convert_to_unicode(42)


@pytest.mark.parametrize("text,expected", [("", []), ("   ", []), (" a  b\tc\n", ["a", "b", "c"]),
                                           ("x\u3000y", ["x", "y"])])
def test_whitespace_tokenize(text, expected):
    assert tk.whitespace_tokenize(text) == expected


def test_tokenizers_take_utf8_bytes_as_the_original_does(small):
    text = "UNwant\u00E9d,running"
    assert small.tokenize(text.encode("utf-8")) == small.tokenize(text)
    assert small.encode(text.encode("utf-8")) == [7, 4, 5, 10, 8, 9]
    assert BasicTokenizer().tokenize(b"H\xc3\xa9llo!") == ["hello", "!"]
    assert WordpieceTokenizer(small.vocab).tokenize(b"unwanted") == ["un", "##want", "##ed"]


@pytest.mark.parametrize("lower,checkpoint,error", [
    (True, "gs://bert/uncased_L-12_H-768_A-12/bert_model.ckpt", None),
    (False, "gs://bert/uncased_L-12_H-768_A-12/bert_model.ckpt",
     "uncased: pass do_lower_case=True"),
    (True, "/m/multi_cased_L-12_H-768_A-12/bert_model.ckpt", "is cased: pass do_lower_case=False"),
    (False, "/m/cased_L-24_H-1024_A-16/bert_model.ckpt", None),
    (False, "/m/my_finetuned_model/bert_model.ckpt", None),  # not Google's: not judged
    (True, None, None), (True, "", None),
])
def test_validate_case_matches_checkpoint(lower, checkpoint, error):
    if error is None:
        assert tk.validate_case_matches_checkpoint(lower, checkpoint) is None
    else:
        with pytest.raises(ValueError, match=error):
            tk.validate_case_matches_checkpoint(lower, checkpoint)
