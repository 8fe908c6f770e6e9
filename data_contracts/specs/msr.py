"""GLUE's MRPC split, built from the Microsoft Research source files as GLUE's own script does.

    msr_paraphrase_train.txt + dev_ids.tsv -> train.tsv (rows not in dev_ids) and dev.tsv (rows in it)
    msr_paraphrase_test.txt                -> test.tsv (label column replaced by an `index` column)

File order and the original header line (BOM included) are kept, each row is whitespace-stripped and
re-joined with tabs, so the output is byte-identical to the TSVs everyone else trains on. The
caller writes into a folder of its own and publishes it (tasks/download.py: whole or not at all).
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "dev", "test")
MSR_FILES = ("msr_paraphrase_train.txt", "msr_paraphrase_test.txt", "dev_ids.tsv")
TEST_HEADER = "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n"


class MrpcSourceError(ValueError):
    """MSR source files that GLUE's split rule cannot be applied to; names the file and line."""


def _rows(path: Path) -> tuple[str, list[list[str]]]:
    with open(path, encoding="utf-8", newline="\n") as f:
        header = f.readline()
        rows = []
        for number, line in enumerate(f, start=2):
            fields = line.strip().split("\t")
            if len(fields) != 5:
                raise MrpcSourceError(f"{path}, line {number}: expected 5 tab-separated fields, "
                                      f"got {len(fields)}")
            rows.append(fields)
    return header, rows


def build_glue_mrpc(train_txt: Path, test_txt: Path, dev_ids_tsv: Path, out_dir: Path) -> Path:
    """Write train.tsv, dev.tsv and test.tsv into `out_dir` (made if missing)."""
    with open(dev_ids_tsv, encoding="utf-8") as f:
        dev_ids = {tuple(line.strip().split("\t")) for line in f if line.strip()}
    header, train_rows = _rows(train_txt)
    _, test_rows = _rows(test_txt)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "train.tsv", "w", encoding="utf-8", newline="\n") as train, \
            open(out_dir / "dev.tsv", "w", encoding="utf-8", newline="\n") as dev:
        train.write(header)
        dev.write(header)
        for label, id1, id2, s1, s2 in train_rows:
            target = dev if (id1, id2) in dev_ids else train
            target.write(f"{label}\t{id1}\t{id2}\t{s1}\t{s2}\n")
    with open(out_dir / "test.tsv", "w", encoding="utf-8", newline="\n") as test:
        test.write(TEST_HEADER)
        for index, (_, id1, id2, s1, s2) in enumerate(test_rows):
            test.write(f"{index}\t{id1}\t{id2}\t{s1}\t{s2}\n")
    return out_dir
