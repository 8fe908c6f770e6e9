"""Data profiles and the drift of a new drop against the champion's training data, on frames
generated here (and on real MRPC when ../shared is present)."""

from __future__ import annotations

import random
import time

import numpy as np
import pandas as pd
import pytest

from bert_core.features import encode_pairs
from bert_core.tokenization import FullTokenizer
from data_contracts.specs import GLUE
from tasks.config import DriftCheck, DriftConfig
from tasks.drift import DriftReport, compare, measure, overlap_share, plot
from tasks.profile import DataProfile, majority_label, mean_score, profile_examples
from tests.fixtures import WORDS, tiny_vocab

MAX_SEQ = 64
UNKNOWN = ("zxq", "qwv", "jjk", "vvz")  # no word piece of the tiny vocab covers these


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> FullTokenizer:
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("".join(token + "\n" for token in tiny_vocab()))
    return FullTokenizer(vocab, do_lower_case=True)


def _sentence(rng: random.Random, words: tuple[int, int], unknown: float) -> str:
    n = rng.randint(*words)
    return " ".join(rng.choice(UNKNOWN) if rng.random() < unknown else rng.choice(WORDS)
                    for _ in range(n)) + " ."


def drop(n: int, seed: int, words=(4, 12), positive=0.6, unknown=0.0, pair=True,
         scores: tuple[float, float] | None = None) -> pd.DataFrame:
    """`n` generated examples: random sentences, label "1" with chance `positive` (or, given
    `scores`, a score uniform in that interval)."""
    rng = random.Random(seed)
    rows = [{"guid": f"train-{i}", "text_a": _sentence(rng, words, unknown),
             "text_b": _sentence(rng, words, unknown) if pair else None,
             "label": rng.uniform(*scores) if scores else str(int(rng.random() < positive)),
             "line": i + 2} for i in range(n)]
    return pd.DataFrame(rows)


def profile(frame: pd.DataFrame, tokenizer, regression=False) -> DataProfile:
    return profile_examples(frame, tokenizer, MAX_SEQ, regression,
                            score_range=(0.0, 5.0) if regression else None)


def statuses(report: DriftReport) -> dict[str, str]:
    return {check.name: check.status for check in report.checks}


@pytest.fixture(scope="module")
def champion(tokenizer) -> DataProfile:
    return profile(drop(400, seed=1), tokenizer)


def test_profile_counts_what_bert_would_see(tokenizer):
    frame = pd.DataFrame({
        "text_a": ["the company said", "zxq shares rose", "the company said", "the company said"],
        "text_b": ["profit rose .", "", "profit rose .", "shares ."],
        "label": ["1", "0", "1", "0"], "guid": list("abcd"), "line": [2, 3, 4, 5]})
    p = profile_examples(frame, tokenizer, max_seq_length=8, regression=False)
    # [CLS] the company said [SEP] profit rose . [SEP] = 9; [CLS] zxq shares rose [SEP] = 5
    assert (p.length_counts[9], p.length_counts[5], p.length_counts[8]) == (2, 1, 1)
    assert p.truncated_share == 0.5
    assert p.unk_rate == pytest.approx(1 / 20)
    assert p.duplicate_share == 0.25  # the third row; the fourth has another second sentence
    assert p.text_b_share == 0.75 and p.pair
    assert p.label_counts == {"0": 2, "1": 2} and majority_label(p) == "0"  # a tie: by name


def test_lengths_are_the_packed_inputs_features_builds(tokenizer):
    frame = drop(50, seed=3)
    p = profile(frame, tokenizer)
    packed = encode_pairs(tokenizer, list(frame.text_a), list(frame.text_b), MAX_SEQ)
    assert p.length_counts == np.bincount(packed.input_mask.sum(axis=1),
                                          minlength=4 * MAX_SEQ + 1).tolist()


def test_single_sentences_profile_as_no_pair(tokenizer):
    p = profile(drop(30, seed=4, pair=False), tokenizer)
    assert not p.pair and p.text_b_share == 0
    assert sum(p.length_counts[:16]) == 30  # [CLS] 4-12 words . [SEP]: at most 15


def test_profile_round_trips_through_json(tokenizer):
    for p in (profile(drop(40, seed=5), tokenizer),
              profile(drop(40, seed=5, scores=(0, 5)), tokenizer, regression=True)):
        again = DataProfile.model_validate_json(p.model_dump_json())
        assert again == p
    assert again.score_range == (0.0, 5.0) and len(again.score_counts) == 20
    assert mean_score(again) == pytest.approx(drop(40, seed=5, scores=(0, 5)).label.mean())


def test_a_profile_whose_counts_do_not_add_up_is_refused(champion):
    broken = champion.model_dump() | {"rows": champion.rows + 1}
    with pytest.raises(ValueError, match="sum to 400"):
        DataProfile.model_validate(broken)


def test_two_samples_of_one_distribution_breach_nothing(tokenizer, champion):
    report = compare(champion, profile(drop(400, seed=2), tokenizer), DriftConfig(), 0.0, "b")
    assert report.breached == [] and not report.blocked
    assert list(statuses(report)) == list(measure(champion, champion, 0.01, 0.0))
    assert "No drift past the thresholds" in report.markdown("Drift")


def test_every_configured_check_is_measured(champion):
    configured = [name for name, value in DriftConfig() if isinstance(value, DriftCheck)]
    assert list(measure(champion, champion, 0.01, 0.0)) == configured


def test_labels_all_one_class_block_on_label_shift(tokenizer, champion):
    after = profile(drop(400, seed=2, positive=1.0), tokenizer)
    report = compare(champion, after, DriftConfig(), 0.0)
    shift = report.checks[0]
    assert shift.name == "label_shift" and shift.status == "block" and report.blocked
    assert shift.value == pytest.approx(1 - champion.label_counts["1"] / 400)
    assert shift.detail.startswith("label 1 share 58.2% -> 100.0% (+41.8 pp), chi-square p=")


def test_a_small_label_change_is_not_flagged_unless_significant(tokenizer):
    before = profile(drop(40, seed=1, positive=0.5), tokenizer)
    after = profile(drop(40, seed=2, positive=0.75), tokenizer)
    shift = compare(before, after, DriftConfig(), 0.0).checks[0]
    assert shift.value >= 0.10 and shift.status == "ok" and "not significant" in shift.detail


def test_texts_three_times_longer_block_on_length_and_raise_truncation(tokenizer, champion):
    after = profile(drop(400, seed=2, words=(12, 36)), tokenizer)
    report = compare(champion, after, DriftConfig(), 0.0)
    got = statuses(report)
    assert got["length_psi"] == got["length_ks"] == "block"
    assert got["truncated"] in ("warn", "block")
    assert champion.truncated_share == 0 and after.truncated_share > 0.1
    assert got["label_shift"] == "ok"
    assert "p=" in report.checks[2].detail


def test_many_unknown_words_raise_the_unk_rate(tokenizer, champion):
    after = profile(drop(400, seed=2, unknown=0.2), tokenizer)
    check = compare(champion, after, DriftConfig(), 0.0).checks[4]
    assert check.name == "unk_rate" and check.status == "block"
    assert check.value == pytest.approx(after.unk_rate) and 0.15 < after.unk_rate < 0.25


def test_duplicated_rows_breach_duplicates(tokenizer, champion):
    frame = drop(400, seed=2)
    doubled = pd.concat([frame, frame.iloc[:60]], ignore_index=True)
    check = compare(champion, profile(doubled, tokenizer), DriftConfig(), 0.0).checks[5]
    assert check.name == "duplicates" and check.status == "block"
    assert check.value == pytest.approx(60 / 460)


def test_evaluation_examples_seen_in_train_breach_eval_overlap(tokenizer, champion):
    train, dev = drop(400, seed=2), drop(50, seed=9)
    assert overlap_share(train, dev) == 0.0
    leaked = pd.concat([dev.iloc[:47], train.iloc[:3]], ignore_index=True)
    share = overlap_share(train, leaked)
    assert share == pytest.approx(0.06)
    check = compare(champion, profile(train, tokenizer), DriftConfig(), share).checks[6]
    assert check.name == "eval_overlap" and check.status == "block"


def test_regression_scores_shift_by_their_mean(tokenizer):
    before = profile(drop(400, seed=1, scores=(0, 5)), tokenizer, regression=True)
    same = profile(drop(400, seed=2, scores=(0, 5)), tokenizer, regression=True)
    high = profile(drop(400, seed=2, scores=(3, 5)), tokenizer, regression=True)
    assert compare(before, same, DriftConfig(), 0.0).breached == []
    shift = compare(before, high, DriftConfig(), 0.0).checks[0]
    assert shift.status == "block" and shift.value == pytest.approx(
        (high.score_mean - before.score_mean) / 5)
    assert "mean score" in shift.detail and "KS p=" in shift.detail
    with pytest.raises(ValueError):
        majority_label(before)
    with pytest.raises(ValueError, match="not comparable"):
        compare(before, profile(drop(40, seed=2), tokenizer), DriftConfig(), 0.0)


def test_custom_thresholds_change_the_verdict(tokenizer, champion):
    after = profile(drop(400, seed=2, words=(12, 36)), tokenizer)
    lenient = DriftConfig(length_psi=DriftCheck(warn=100.0), length_ks=DriftCheck(),
                          truncated=DriftCheck(warn=0.01, block=None))
    got = statuses(compare(champion, after, lenient, 0.0))
    assert got["length_psi"] == got["length_ks"] == "ok" and got["truncated"] == "warn"
    off = compare(champion, after, DriftConfig(enabled=False), 0.0)
    assert len(off.checks) == 7 and off.breached == []
    strict = DriftConfig(length_psi=DriftCheck(warn=0.0, block=0.0))
    same = profile(drop(400, seed=2), tokenizer)
    assert statuses(compare(champion, same, strict, 0.0))["length_psi"] == "block"


def test_markdown_names_each_breached_check_and_its_numbers(tokenizer, champion):
    frame = drop(400, seed=2, positive=1.0, words=(12, 36))
    after = profile(pd.concat([frame, frame.iloc[:40]], ignore_index=True), tokenizer)
    report = compare(champion, after, DriftConfig(), 0.04, drop="2024-06")
    text = report.markdown("Drift of drop 2024-06")
    assert {c.name for c in report.breached} >= {"label_shift", "length_psi", "length_ks",
                                                  "duplicates", "eval_overlap"}
    assert text.startswith("## Drift of drop 2024-06") and "**Blocked**" in text
    bullets = [line for line in text.splitlines() if line.startswith("- **")]
    assert len(bullets) == len(report.breached)
    for check, line in zip(report.breached, bullets):
        assert check.name in line and check.detail in line and f"{check.value:.4g}" in line
    assert sum(line.startswith("| ") for line in text.splitlines()) == 1 + 7
    assert DriftReport.model_validate_json(report.to_json()) == report


def test_plot_writes_a_png_of_both_panels(tokenizer, champion, tmp_path):
    after = profile(drop(400, seed=2, words=(12, 36)), tokenizer)
    scored = profile(drop(50, seed=2, scores=(0, 5)), tokenizer, regression=True)
    for name, before, later in (("labels", champion, after), ("scores", scored, scored)):
        path = plot(before, later, tmp_path / f"{name}.png")
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000


@pytest.mark.shared
def test_real_mrpc_halves_do_not_block(shared, shared_vocab):
    spec = GLUE["mrpc"]
    train = spec.read(shared / "data" / "mrpc", spec.split("train"))
    dev = spec.read(shared / "data" / "mrpc", spec.split("dev"))
    tokenizer = FullTokenizer(shared_vocab, do_lower_case=True)
    start = time.perf_counter()
    whole = profile_examples(train, tokenizer, 128, regression=False)
    seconds = time.perf_counter() - start
    assert whole.rows == 3668 and whole.label_counts == {"0": 1194, "1": 2474}
    assert seconds < 3.0, f"profiling MRPC's train took {seconds:.2f}s"
    half = len(train) // 2
    first, second = (profile_examples(part, tokenizer, 128, regression=False)
                     for part in (train.iloc[:half], train.iloc[half:]))
    report = compare(first, second, DriftConfig(), overlap_share(train.iloc[half:], dev))
    print(f"\nprofiled {whole.rows} pairs in {seconds:.2f}s\n" + report.markdown("MRPC halves"))
    assert not report.blocked
