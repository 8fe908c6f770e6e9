"""GLUE's MRPC split rule."""

from __future__ import annotations

import filecmp

import pytest

from data_contracts.specs.msr import MrpcSourceError, build_glue_mrpc
from tests.fixtures import write_msr_files


@pytest.mark.shared
def test_builds_glue_files_byte_identical_to_the_published_ones(shared, tmp_path):
    src = shared / "data" / "mrpc"
    out = build_glue_mrpc(src / "msr_paraphrase_train.txt", src / "msr_paraphrase_test.txt",
                          src / "dev_ids.tsv", tmp_path / "glue")
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        assert filecmp.cmp(out / name, src / name, shallow=False), name


def test_split_rule_on_a_generated_drop(tmp_path):
    src = write_msr_files(tmp_path / "msr", train_rows=8, test_rows=3, dev_every=4)
    out = build_glue_mrpc(src / "msr_paraphrase_train.txt", src / "msr_paraphrase_test.txt",
                          src / "dev_ids.tsv", tmp_path / "glue")
    train = (out / "train.tsv").read_text(encoding="utf-8").splitlines()
    dev = (out / "dev.tsv").read_text(encoding="utf-8").splitlines()
    test = (out / "test.tsv").read_text(encoding="utf-8").splitlines()
    assert train[0].startswith("\ufeffQuality") and dev[0] == train[0]
    assert [r.split("\t")[1] for r in dev[1:]] == ["1006", "1014"]
    assert len(train) == 1 + 6
    assert test[0] == "index\t#1 ID\t#2 ID\t#1 String\t#2 String"
    assert [r.split("\t")[:2] for r in test[1:]] == [["0", "9000"], ["1", "9002"], ["2", "9004"]]


def test_malformed_source_line_is_named(tmp_path):
    src = write_msr_files(tmp_path / "msr")
    lines = (src / "msr_paraphrase_train.txt").read_text(encoding="utf-8").splitlines(True)
    lines[3] = lines[3].replace("\t", " ", 1)
    (src / "msr_paraphrase_train.txt").write_text("".join(lines), encoding="utf-8")
    with pytest.raises(MrpcSourceError, match=r"msr_paraphrase_train.txt, line 4: expected 5"):
        build_glue_mrpc(src / "msr_paraphrase_train.txt", src / "msr_paraphrase_test.txt",
                        src / "dev_ids.tsv", tmp_path / "glue")
    assert not (tmp_path / "glue").exists()
