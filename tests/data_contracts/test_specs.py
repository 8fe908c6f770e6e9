"""Task specs: each task's release layout read into examples, custom files with a column mapping,
and the contract's verdict on broken files (file, line, rule, the offending value)."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_contracts.errors import ContractViolation
from data_contracts.examples import validate_examples
from data_contracts.specs import GLUE, TaskConfig, task_spec
from tests.task_files import custom_rows, write_custom, write_task_files


def read(task: str, folder: Path, **cfg):
    spec = task_spec(TaskConfig(name=task, **cfg))
    return spec, spec.read_all(folder)


def verdict(spec, frames, split: str):
    labels = spec.label_names(frames["train"])
    return validate_examples(frames[split], file=spec.split(split).file, spec=spec, split=split,
                             labels=labels, bounds=(1, 1000),
                             train=None if split == "train" else frames["train"])


def test_cola_reads_headerless_files_and_a_dev_without_final_newline(tmp_path):
    spec, frames = read("cola", write_task_files("cola", tmp_path, rows=12))
    assert [len(frames[s]) for s in ("train", "dev", "test")] == [12, 4, 4]
    assert frames["train"]["guid"].iloc[0] == "train-0"  # run_classifier's ColaProcessor
    assert frames["test"]["guid"].iloc[0] == "test-1"  # ... which skips test's header
    assert frames["dev"]["text_b"].isna().all() and not spec.pair


def test_mnli_evaluates_matched_and_mismatched_dev(tmp_path):
    spec, frames = read("mnli", write_task_files("mnli", tmp_path))
    roles = {s.name: s.role for s in spec.splits}
    assert roles == {"train": "train", "dev": "eval", "dev_mismatched": "eval", "test": "test",
                     "test_mismatched": "test"}
    assert set(frames["dev_mismatched"]["label"]) == {"contradiction", "entailment", "neutral"}
    assert spec.submission == {"test": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"}


def test_xnli_keeps_one_language_and_renames_contradictory(tmp_path):
    spec, frames = read("xnli", write_task_files("xnli", tmp_path, rows=12))
    assert len(frames["dev"]) == 4  # the English rows of the 8 are skipped
    assert frames["dev"]["line"].tolist() == [3, 5, 7, 9]
    assert "contradictory" not in set(frames["train"]["label"])
    with pytest.raises(ValueError, match="no language 'xx'"):
        task_spec(TaskConfig(name="xnli", language="xx"))


def test_stsb_scores_are_numbers_and_out_of_range_ones_are_named(tmp_path):
    folder = write_task_files("stsb", tmp_path)
    dev = folder / "dev.tsv"
    lines = dev.read_text().splitlines()
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\t7.5"
    dev.write_text("\n".join(lines) + "\n")
    spec, frames = read("stsb", folder)
    assert frames["train"]["label"].dtype == float
    [failure] = verdict(spec, frames, "dev").failures
    assert failure.rule == "label is a number from 0.0 to 5.0"
    assert failure.examples == ["row 3 (line 4): 7.5"]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_custom_files_map_their_columns(tmp_path, fmt):
    train = write_custom(tmp_path / "in" / f"train.{fmt}", custom_rows(20), fmt)
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / f"train.{fmt}").write_bytes(train.read_bytes())
    spec, frames = read("custom", folder, train=str(train), text_a="review", text_b="summary",
                        label="stars", id="id")
    assert spec.label_names(frames["train"]) == ("negative", "positive")
    assert len(frames["train"]) + len(frames["dev"]) == 20
    first = frames["train"].iloc[0]
    assert (first["guid"], first["label"]) == ("ex0", "negative")
    assert verdict(spec, frames, "dev").success


def test_custom_dev_split_is_seeded_stratified_and_disjoint(tmp_path):
    train = write_custom(tmp_path / "train.csv", custom_rows(40), "csv")
    def dev_guids(seed):
        _, frames = read("custom", tmp_path, train=str(train), text_a="review", label="stars",
                         split_seed=seed)
        assert not set(frames["dev"]["guid"]) & set(frames["train"]["guid"])
        return frames["dev"]["guid"].tolist(), frames["dev"]["label"].value_counts().tolist()
    assert dev_guids(1) == dev_guids(1)
    assert dev_guids(1)[0] != dev_guids(2)[0]
    assert dev_guids(1)[1] == [2, 2]  # 10% of 40, half of each label


def test_csv_with_a_broken_quote_is_a_read_error_naming_the_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('review,stars\n"fine",positive\n"never closed,negative\nok,positive\n')
    with pytest.raises(ContractViolation, match=r"train.csv, line 3: csv quoting: "):
        read("custom", tmp_path, train=str(path), text_a="review", label="stars")


def test_a_missing_mapped_column_is_named_with_those_found(tmp_path):
    path = write_custom(tmp_path / "train.jsonl", custom_rows(10), "jsonl")
    with pytest.raises(ContractViolation, match=r"columns: no column 'text' \(found 'id', "
                                                r"'review', 'stars', 'summary'\)"):
        read("custom", tmp_path, train=str(path), label="stars")


def test_unknown_label_in_dev_and_empty_text_are_named(tmp_path):
    rows = custom_rows(12)
    write_custom(tmp_path / "train.csv", rows, "csv")
    dev = [dict(rows[0], stars="neutral"), dict(rows[1], review=""), rows[2]]
    write_custom(tmp_path / "dev.csv", dev, "csv")
    spec, frames = read("custom", tmp_path, train=str(tmp_path / "train.csv"),
                        dev=str(tmp_path / "dev.csv"), text_a="review", label="stars")
    report = verdict(spec, frames, "dev")
    failures = {f.rule: f.examples for f in report.failures}
    assert failures["label is one of ['negative', 'positive']"] == ["row 1 (line 2): 'neutral'"]
    assert failures["text_a is not blank"] == ["row 2 (line 3): ''"]
    with pytest.raises(ContractViolation, match=r"dev.csv: 3 of \d+ expectations .* failed"):
        report.raise_for_failures()


@pytest.mark.shared
@pytest.mark.parametrize("task,folder,rows", [
    ("cola", "CoLA", (8551, 1043, 1063)), ("sst2", "SST-2", (67349, 872, 1821)),
    ("rte", "RTE", (2490, 277, 3000)), ("stsb", "STS-B", (5749, 1500, 1379))])
def test_real_glue_files_keep_their_contract(shared, task, folder, rows):
    spec = GLUE[task]
    frames = spec.read_all(shared / "data" / "glue" / folder)
    assert tuple(len(frames[s]) for s in ("train", "dev", "test")) == rows
    for split in ("train", "dev", "test"):
        report = validate_examples(frames[split], file=split, spec=spec, split=split,
                                   labels=spec.label_names(frames["train"]),
                                   bounds=spec.bounds(split),
                                   train=None if split == "train" else frames["train"])
        assert report.success, [f.describe() for f in report.failures]
