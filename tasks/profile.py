"""A compact data profile of a task's examples: what a drop's drift is judged by.

    tokenizer = FullTokenizer(vocab_file, do_lower_case=True)
    profile = profile_examples(train, tokenizer, max_seq_length=128, regression=False)
    profile.model_dump_json()            # stored with the model version; model_validate_json back

An example's length is the token count of the packed input BERT would see if nothing were cut:
[CLS] a [SEP] (+ b [SEP]), as bert_core/features.py packs it.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, model_validator

from bert_core.features import CLS, SEP, pack_ids
from bert_core.tokenization import FullTokenizer
from data_contracts.examples import example_texts

LENGTH_CAP_FACTOR = 4  # lengths are counted one by one up to 4 * max_seq_length
SCORE_BINS = 20  # equal-width bins of a regression task's score range
UNK = "[UNK]"


class DataProfile(BaseModel):
    """What a drift check needs of a training set, in a few kilobytes of JSON.

    `length_counts[n]` counts the examples of untruncated length n for n < cap, and
    `length_counts[cap]` those of cap or more, where cap = LENGTH_CAP_FACTOR * max_seq_length.
    Classification fills `label_counts` (class name -> rows). Regression fills `score_range`
    (the task's, else the lowest and highest score seen), `score_counts` (rows per SCORE_BINS equal-width bins of it,
    the top bin closed) and the exact `score_mean` and `score_std` (population sd).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int
    pair: bool
    text_b_share: float
    max_seq_length: int
    length_counts: list[int]
    truncated_share: float
    unk_rate: float
    duplicate_share: float
    label_counts: dict[str, int] = {}
    score_range: tuple[float, float] | None = None
    score_counts: list[int] = []
    score_mean: float | None = None
    score_std: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DataProfile:
        if len(self.length_counts) != LENGTH_CAP_FACTOR * self.max_seq_length + 1:
            raise ValueError(f"{len(self.length_counts)} length counts for max_seq_length "
                             f"{self.max_seq_length}: want {self.length_cap + 1}")
        if sum(self.length_counts) != self.rows:
            raise ValueError(f"length counts sum to {sum(self.length_counts)}, not {self.rows}")
        return self

    @property
    def regression(self) -> bool:
        return self.score_range is not None

    @property
    def length_cap(self) -> int:
        return LENGTH_CAP_FACTOR * self.max_seq_length

    def score_edges(self) -> np.ndarray:
        """The SCORE_BINS + 1 edges of the score bins (regression only)."""
        low, high = self.score_range
        return np.linspace(low, high, SCORE_BINS + 1)


def _second(text) -> str:
    return "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)


def token_stats(texts_a, texts_b, tokenizer: FullTokenizer) -> tuple[np.ndarray, int, int]:
    """(untruncated packed length per example, [UNK] wordpieces, all wordpieces).

    >>> tok = FullTokenizer.from_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "cat"])
    >>> lengths, unk, pieces = token_stats(["a cat", "a dog"], ["cat", None], tok)
    >>> lengths.tolist(), unk, pieces
    ([6, 4], 1, 5)
    """
    cls_id, sep_id, unk_id = tokenizer.convert_tokens_to_ids([CLS, SEP, UNK])
    lengths, unk, pieces = [], 0, 0
    for a, b in zip(texts_a, texts_b):
        ids_a, ids_b = tokenizer.encode(_second(a)), tokenizer.encode(_second(b))
        ids, _ = pack_ids(ids_a, ids_b, sys.maxsize, cls_id, sep_id)  # nothing cut
        lengths.append(len(ids))
        unk += ids_a.count(unk_id) + ids_b.count(unk_id)
        pieces += len(ids_a) + len(ids_b)
    return np.asarray(lengths, np.int64), unk, pieces


def score_stats(scores: np.ndarray, score_range: tuple[float, float] | None = None) -> dict:
    """The regression fields: score range (the task's, else the scores' own), counts per
    equal-width bin (a score outside the range counts in the nearest end bin), mean and sd.

    >>> stats = score_stats(np.array([0.0, 1.0, 5.0]))
    >>> stats["score_range"], sum(stats["score_counts"]), stats["score_counts"][-1]
    ((0.0, 5.0), 3, 1)
    >>> score_stats(np.array([2.0, 9.0]), (0.0, 5.0))["score_counts"][-1]
    1
    """
    if score_range is None and len(scores):
        score_range = (float(scores.min()), float(scores.max()))
    low, high = score_range or (0.0, 1.0)
    high = high if high > low else low + 1.0
    counts, _ = np.histogram(np.clip(scores, low, high), bins=SCORE_BINS, range=(low, high))
    return {"score_range": (low, high), "score_counts": counts.tolist(),
            "score_mean": float(scores.mean()) if len(scores) else 0.0,
            "score_std": float(scores.std()) if len(scores) else 0.0}


def profile_examples(examples: pd.DataFrame, tokenizer: FullTokenizer, max_seq_length: int,
                     regression: bool, score_range: tuple[float, float] | None = None
                     ) -> DataProfile:
    """The profile of an examples frame (data_contracts/specs/spec.py); unlabeled rows count
    towards every share but the labels'. Pass a regression task's `score_range` (its spec's)
    so that two drops' scores fall in the same bins."""
    seconds = examples["text_b"].map(_second)
    lengths, unk, pieces = token_stats(examples["text_a"], seconds, tokenizer)
    cap = LENGTH_CAP_FACTOR * max_seq_length
    rows = len(examples)
    labels = examples["label"].dropna()
    if regression:
        fields = score_stats(labels.astype(float).to_numpy(), score_range)
    else:
        counts = labels.astype(str).value_counts()
        fields = {"label_counts": {name: int(counts[name]) for name in sorted(counts.index)}}
    return DataProfile(
        rows=rows, pair=bool((seconds != "").any()),
        text_b_share=float((seconds != "").mean()) if rows else 0.0,
        max_seq_length=max_seq_length,
        length_counts=np.bincount(np.minimum(lengths, cap), minlength=cap + 1).tolist(),
        truncated_share=float((lengths > max_seq_length).mean()) if rows else 0.0,
        unk_rate=unk / pieces if pieces else 0.0,
        duplicate_share=float(example_texts(examples).duplicated().mean()) if rows else 0.0,
        **fields)


def majority_label(profile: DataProfile) -> str:
    """The most frequent class (the first by name on a tie): a constant baseline's answer.

    >>> majority_label(DataProfile(rows=3, pair=False, text_b_share=0, max_seq_length=1,
    ...     length_counts=[0, 0, 3, 0, 0], truncated_share=1, unk_rate=0, duplicate_share=0,
    ...     label_counts={"0": 1, "1": 2}))
    '1'
    """
    if not profile.label_counts:
        raise ValueError("the profile has no class counts (a regression task's, or unlabeled)")
    return min(profile.label_counts, key=lambda name: (-profile.label_counts[name], name))


def mean_score(profile: DataProfile) -> float:
    """The mean training score: a constant baseline's prediction (regression only)."""
    if profile.score_mean is None:
        raise ValueError("the profile has no scores (a classification task's)")
    return profile.score_mean


def overlap_share(train: pd.DataFrame, evaluation: pd.DataFrame) -> float:
    """Share of `evaluation`'s examples whose (text_a, text_b) is also in `train`.

    >>> train = pd.DataFrame({"text_a": ["x", "y"], "text_b": ["p", None]})
    >>> overlap_share(train, pd.DataFrame({"text_a": ["x", "y"], "text_b": ["p", "q"]}))
    0.5
    """
    if len(evaluation) == 0:
        return 0.0
    return float(example_texts(evaluation).isin(set(example_texts(train))).mean())
