"""WordPiece tokenization with google-research/bert's exact semantics.

A port of `tokenization.py` from google-research/bert, keeping its public surface so that code
ported from `run_classifier.py` keeps working: the functions `convert_to_unicode`, `printable_text`,
`load_vocab`, `convert_by_vocab`, `convert_tokens_to_ids`, `convert_ids_to_tokens`,
`whitespace_tokenize` and `validate_case_matches_checkpoint`, and the classes `FullTokenizer`,
`BasicTokenizer` and `WordpieceTokenizer` with `tokenize` (`FullTokenizer` also has
`convert_tokens_to_ids`, `convert_ids_to_tokens`, `vocab` and `inv_vocab`).

    >>> tok = FullTokenizer.from_tokens(
    ...     ["[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un", "runn", "##ing", ","])
    >>> tok.tokenize("UNwant\\u00E9d,running")
    ['un', '##want', '##ed', ',', 'runn', '##ing']
    >>> tok.encode("UNwant\\u00E9d,running")
    [7, 4, 5, 10, 8, 9]

The only departure is speed: `FullTokenizer` memoises the word pieces of each whitespace-separated
word. Everything after the whole-text clean-up (control characters, CJK spacing) works word by word,
so the cache cannot change a single id. The memo is bounded (`memo_words`, MEMO_WORDS by default):
a server's memory stays flat whatever text it is sent.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

MAX_INPUT_CHARS_PER_WORD = 200
MEMO_WORDS = 50_000  # words a FullTokenizer remembers: all of MRPC has 20k distinct ones, SST-2 15k

# CJK Unified Ideographs and their extensions, as google-research/bert lists them. Hangul and kana
# are not here: they are written with spaces, so they need no splitting.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def convert_to_unicode(text: str | bytes) -> str:
    """`text` as `str`: bytes are decoded as UTF-8, invalid sequences dropped (as in the original).

    >>> convert_to_unicode(b"caf\\xc3\\xa9 \\xff!")
    'café !'
    """
    if isinstance(text, str):
        return text
    if isinstance(text, bytes):
        return text.decode("utf-8", "ignore")
    raise ValueError(f"Unsupported string type: {type(text)}")


def printable_text(text: str | bytes) -> str:
    """Text for `print` or logging; on Python 3 the same as `convert_to_unicode`."""
    return convert_to_unicode(text)


def load_vocab(vocab_file: str | os.PathLike) -> dict[str, int]:
    """Vocab id = line number of the stripped line (a later duplicate wins, as in the original)."""
    with open(vocab_file, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line starts no line
    return {line.decode("utf-8", "ignore").strip(): index for index, line in enumerate(lines)}


def convert_by_vocab(vocab: Mapping, items: Iterable) -> list:
    """Look up each item: tokens to ids with a vocab, ids to tokens with the inverse vocab.

    An item missing from `vocab` raises KeyError, as in google-research/bert; tokenizing first
    guarantees every token is in the vocab (an unmatched word becomes [UNK]).

    >>> vocab = {"[UNK]": 0, "un": 1, "##want": 2, "##ed": 3}
    >>> convert_by_vocab(vocab, ["un", "##want", "##ed"])
    [1, 2, 3]
    >>> convert_by_vocab({i: t for t, i in vocab.items()}, [3, 0])
    ['##ed', '[UNK]']
    """
    return [vocab[item] for item in items]


def convert_tokens_to_ids(vocab: Mapping[str, int], tokens: Iterable[str]) -> list[int]:
    return convert_by_vocab(vocab, tokens)


def convert_ids_to_tokens(inv_vocab: Mapping[int, str], ids: Iterable[int]) -> list[str]:
    return convert_by_vocab(inv_vocab, ids)


def whitespace_tokenize(text: str) -> list[str]:
    """Split on runs of whitespace, Unicode's included; blank text gives no tokens.

    >>> whitespace_tokenize("  the\\tquick\\n brown\\u00a0fox ")
    ['the', 'quick', 'brown', 'fox']
    >>> whitespace_tokenize(" ")
    []
    """
    return text.split()


# The checkpoints google-research/bert publishes, by casing; the directory name tells which it is.
_UNCASED_MODELS = ("uncased_L-24_H-1024_A-16", "uncased_L-12_H-768_A-12",
                   "multilingual_L-12_H-768_A-12", "chinese_L-12_H-768_A-12")
_CASED_MODELS = ("cased_L-12_H-768_A-12", "cased_L-24_H-1024_A-16", "multi_cased_L-12_H-768_A-12")


def validate_case_matches_checkpoint(do_lower_case: bool, init_checkpoint: str | None) -> None:
    """Raise ValueError when `do_lower_case` contradicts a published checkpoint's name.

    Only `.../<model name>/bert_model.ckpt` paths of Google's own checkpoints are judged; any
    other path passes, as in the original.

    >>> validate_case_matches_checkpoint(True, "/ckpt/cased_L-12_H-768_A-12/bert_model.ckpt")
    Traceback (most recent call last):
    ...
    ValueError: cased_L-12_H-768_A-12 is cased: pass do_lower_case=False, not True
    """
    match = re.match("^.*?([A-Za-z0-9_-]+)/bert_model.ckpt", init_checkpoint or "")
    if match is None:
        return
    name = match.group(1)
    if (name in _UNCASED_MODELS and not do_lower_case) or (name in _CASED_MODELS and do_lower_case):
        case = "cased" if name in _CASED_MODELS else "uncased"
        raise ValueError(f"{name} is {case}: pass do_lower_case={not do_lower_case}, "
                         f"not {do_lower_case}")


def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    if char in "\t\n\r":
        return False
    return unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char: str) -> bool:
    """ASCII non-letters/digits count as punctuation too (`$`, `^`, `` ` ``), as in the original."""
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_chinese_char(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


class _PrepareTable(dict):
    """`str.translate` table for the whole-text clean-up, filled one codepoint at a time.

    Each rule depends on the codepoint alone, so memoising it is exact, and translate then runs
    at C speed: the char-by-char loop was 85% of tokenization time.
    """

    def __missing__(self, cp: int) -> str | None:
        char = chr(cp)
        if cp == 0 or cp == 0xFFFD or _is_control(char):
            value = None  # dropped
        elif _is_whitespace(char):
            value = " "
        elif _is_chinese_char(cp):
            value = f" {char} "
        else:
            value = char
        self[cp] = value
        return value


_PREPARE = _PrepareTable()


class BasicTokenizer:
    """Cleans text, splits on whitespace and punctuation, optionally lower-cases and strips accents."""

    def __init__(self, do_lower_case: bool = True):
        self.do_lower_case = do_lower_case

    def tokenize(self, text: str) -> list[str]:
        words = whitespace_tokenize(self.prepare(text))
        return [piece for word in words for piece in self.split_word(word)]

    def prepare(self, text: str) -> str:
        """The whole-text steps: drop invalid and control chars, map whitespace, space out CJK."""
        return convert_to_unicode(text).translate(_PREPARE)

    def split_word(self, word: str) -> list[str]:
        """The per-word steps: lower-case, strip accents, split off every punctuation char."""
        if self.do_lower_case:
            word = _strip_accents(word.lower())
        return whitespace_tokenize(" ".join(_split_on_punc(word)))


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def _split_on_punc(text: str) -> list[str]:
    """'a,b!' -> ['a', ',', 'b', '!']"""
    output: list[list[str]] = []
    start_new_word = True
    for char in text:
        if _is_punctuation(char):
            output.append([char])
            start_new_word = True
        else:
            if start_new_word:
                output.append([])
            start_new_word = False
            output[-1].append(char)
    return ["".join(x) for x in output]


class WordpieceTokenizer:
    """Greedy longest-match-first WordPiece; a word with any unmatched position becomes one [UNK]."""

    def __init__(self, vocab: Mapping[str, int], unk_token: str = "[UNK]",
                 max_input_chars_per_word: int = MAX_INPUT_CHARS_PER_WORD):
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word

    def tokenize(self, text: str) -> list[str]:
        return [piece for word in whitespace_tokenize(convert_to_unicode(text))
                for piece in self.split_word(word)]

    def split_word(self, word: str) -> list[str]:
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        pieces = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:
                return [self.unk_token]
            pieces.append(piece)
            start = end
        return pieces


class WordMemo:
    """word -> its ids, holding at most `size` words (None: every word; 0: none), the recently
    used ones: the memo keeps two generations, `recent` and `older`, of at most size // 2 words
    each. A word found in `older` moves up to `recent`; when `recent` is full it becomes `older`
    and the old `older` is dropped. So a word used within the last size // 2 new words is never
    forgotten (an LRU's guarantee, halved) and a hit costs one dict lookup (`recent.get`), where
    functools.lru_cache's bookkeeping made tokenizing a third slower.

    >>> memo = WordMemo(len, size=2)
    >>> [memo.fetch(w) for w in ("a", "bb", "a", "ccc")], sorted(memo.recent), sorted(memo.older)
    ([1, 2, 1, 3], ['ccc'], ['a'])
    """

    def __init__(self, compute, size: int | None):
        self.compute, self.size = compute, size
        self.generation = None if size is None else max(1, size // 2)
        self.recent: dict[str, list[int]] = {}
        self.older: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.recent) + len(self.older)

    def fetch(self, word: str) -> list[int]:
        """The value of a word missing from `recent`: moved up from `older`, or computed."""
        value = self.older.pop(word, None)
        if value is None:
            value = self.compute(word)
        if self.size == 0:
            return value
        if self.generation is not None and len(self.recent) >= self.generation:
            self.older, self.recent = self.recent, {}
        self.recent[word] = value
        return value


class FullTokenizer:
    """Basic tokenization followed by WordPiece, with a bounded per-word memo of the ids
    (`memo_words` distinct words at most, see WordMemo; None: unbounded; 0: no memo).

    >>> tok = FullTokenizer.from_tokens(["[UNK]", "a", "b"], memo_words=2)
    >>> tok.encode("a b c a"), len(tok.memo)
    ([1, 2, 0, 1], 2)
    """

    def __init__(self, vocab_file: str | os.PathLike, do_lower_case: bool = True,
                 memo_words: int | None = MEMO_WORDS):
        self._init(load_vocab(vocab_file), do_lower_case, memo_words)

    @classmethod
    def from_tokens(cls, tokens: Sequence[str], do_lower_case: bool = True,
                    memo_words: int | None = MEMO_WORDS) -> FullTokenizer:
        """A tokenizer over an in-memory vocab (id = position), for tests and examples."""
        tokenizer = cls.__new__(cls)
        tokenizer._init({token: i for i, token in enumerate(tokens)}, do_lower_case, memo_words)
        return tokenizer

    def _init(self, vocab: dict[str, int], do_lower_case: bool, memo_words: int | None) -> None:
        self.vocab = vocab
        self.inv_vocab = {i: token for token, i in vocab.items()}
        self.do_lower_case = do_lower_case
        self.basic_tokenizer = BasicTokenizer(do_lower_case=do_lower_case)
        self.wordpiece_tokenizer = WordpieceTokenizer(vocab=vocab)
        self.memo = WordMemo(self._word_ids, memo_words)  # word -> the ids of its pieces

    def __len__(self) -> int:
        return len(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        return self.convert_ids_to_tokens(self.encode(text))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`: `convert_tokens_to_ids(tokenize(text))`, only faster."""
        memo, recent, ids = self.memo, self.memo.recent, []
        for word in self.basic_tokenizer.prepare(text).split():  # the hot loop of tokenizing
            word_ids = recent.get(word)
            if word_ids is None:
                word_ids = memo.fetch(word)
                recent = memo.recent  # a new generation may have begun
            ids += word_ids
        return ids

    def _word_ids(self, word: str) -> list[int]:
        return self.convert_tokens_to_ids(
            piece for part in self.basic_tokenizer.split_word(word)
            for piece in self.wordpiece_tokenizer.split_word(part))

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return convert_by_vocab(self.vocab, tokens)

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return convert_by_vocab(self.inv_vocab, ids)
