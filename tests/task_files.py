"""Small data in the exact file layout of each task's public release, generated for tests.

    write_task_files("cola", folder)   -> train.tsv, dev.tsv (no header, no final newline), test.tsv
    write_custom(folder / "train.csv", rows, "csv")

The words come from tests/fixtures.WORDS, so the tiny vocab covers them. Texts hold an unbalanced
`"` where the real files do (RTE, STS-B, MRPC), to keep quote-blind reading honest.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.fixtures import WORDS

NLI = ("contradiction", "entailment", "neutral")
LABELS = {"cola": ("0", "1"), "sst2": ("0", "1"), "rte": ("entailment", "not_entailment"),
          "mnli": NLI, "xnli": NLI}


def sentence(rng: random.Random, quote: bool = False) -> str:
    return ('" ' if quote else "") + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) \
        + " ."


def _write(path: Path, lines: list[str], final_newline: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if final_newline else ""), encoding="utf-8")


def _label(task: str, i: int) -> str:
    if task == "stsb":
        return f"{(i * 0.37) % 5:.3f}"
    labels = LABELS[task]
    return labels[i % len(labels)]


def _glue_rows(task: str, rng: random.Random, n: int, labeled: bool) -> list[str]:
    """Data lines (no header) of one GLUE split of `task`."""
    rows = []
    for i in range(n):
        a, b, y = sentence(rng, i % 7 == 0), sentence(rng), _label(task, i)
        if task == "cola":
            rows.append(f"gj04\t{y}\t\t{a}" if labeled else f"{i}\t{a}")
        elif task == "sst2":
            rows.append(f"{a} \t{y}" if labeled else f"{i}\t{a}")
        elif task == "rte":
            rows.append(f"{i}\t{a}\t{b}" + (f"\t{y}" if labeled else ""))
        elif task == "stsb":
            rows.append(f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{a}\t{b}"
                        + (f"\t{y}" if labeled else ""))
        else:  # mnli
            parses = "\t".join(f"( {s} )" for s in (a, b, a, b))
            head = f"{i}\t{31193 + i}\t{31193 + i}n\tgovernment\t{parses}\t{a}\t{b}"
            rows.append(head + (f"\t{y}\t{y}\t{y}\t{y}\t{y}\t{y}" if labeled else ""))
    return rows


MNLI_HEAD = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
             "sentence1_parse\tsentence2_parse\tsentence1\tsentence2")
HEADERS = {
    "sst2": ("sentence\tlabel", "index\tsentence"),
    "rte": ("index\tsentence1\tsentence2\tlabel", "index\tsentence1\tsentence2"),
    "stsb": ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
             "\tscore",
             "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"),
    "cola": (None, "index\tsentence"),
}


def write_task_files(task: str, folder: Path, rows: int = 24, seed: int = 0) -> Path:
    """`task`'s files in `folder`, `rows` train examples and a third as many for dev and test."""
    rng = random.Random(seed)
    if task == "xnli":
        return _write_xnli(folder, rows, rng)
    small = max(rows // 3, 4)
    if task == "mnli":
        labels = "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"
        _write(folder / "train.tsv", [MNLI_HEAD + "\tlabel1\tgold_label", *[
            r.rsplit("\t", 4)[0] for r in _glue_rows(task, rng, rows, True)]])
        for name in ("dev_matched", "dev_mismatched"):
            _write(folder / f"{name}.tsv", [MNLI_HEAD + labels, *_glue_rows(task, rng, small, True)])
        for name in ("test_matched", "test_mismatched"):
            _write(folder / f"{name}.tsv", [MNLI_HEAD, *_glue_rows(task, rng, small, False)])
        return folder
    labeled_header, test_header = HEADERS[task]
    for split, n in (("train", rows), ("dev", small)):
        lines = _glue_rows(task, rng, n, True)
        _write(folder / f"{split}.tsv", ([labeled_header] if labeled_header else []) + lines,
               final_newline=not (task == "cola" and split == "dev"))  # as CoLA's dev.tsv
    _write(folder / "test.tsv", [test_header, *_glue_rows(task, rng, small, False)])
    return folder


XNLI_HEAD = ("language\tgold_label\tsentence1_binary_parse\tsentence2_binary_parse\t"
             "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tpromptID\tpairID\tgenre\t"
             "label1\tlabel2\tlabel3\tlabel4\tlabel5")


def _write_xnli(folder: Path, rows: int, rng: random.Random) -> Path:
    """XNLI-MT's Chinese train file ("contradictory" for contradiction, as released) and XNLI
    1.0's dev and test files, each holding an English and a Chinese row per example."""
    train = ["premise\thypo\tlabel"]
    for i in range(rows):
        label = NLI[i % 3].replace("contradiction", "contradictory")
        train.append(f"{sentence(rng)}\t{sentence(rng)}\t{label}")
    _write(folder / "multinli" / "multinli.train.zh.tsv", train)
    for name in ("xnli.dev.tsv", "xnli.test.tsv"):
        lines = [XNLI_HEAD]
        for i in range(max(rows // 3, 4)):
            a, b, y = sentence(rng), sentence(rng), NLI[i % 3]
            for language in ("en", "zh"):
                lines.append(f"{language}\t{y}\t( {a} )\t( {b} )\t{a}\t{b}\t{a}\t{b}\t{i}\t{i}\t"
                             f"fiction\t{y}\t{y}\t{y}\t{y}\t{y}")
        _write(folder / name, lines)
    return folder


def custom_rows(n: int, seed: int = 0, pair: bool = True,
                labels: tuple[str, ...] = ("negative", "positive")) -> list[dict]:
    """Rows of a user's own data: an id, one or two texts (one holding a comma, a quote and a
    newline, to exercise CSV quoting) and a string label."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {"id": f"ex{i}", "review": sentence(rng) + (', "said" the\nanalysts' if i == 3
                                                           else ""),
               "stars": labels[i % len(labels)]}
        if pair:
            row["summary"] = sentence(rng)
        rows.append(row)
    return rows


def write_custom(path: Path, rows: list[dict], fmt: str) -> Path:
    """`rows` as a CSV (RFC 4180), TSV, JSON Lines or Parquet file."""
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.replace({"\n": " "}, regex=True).to_csv(path, sep="\t", index=False, quoting=3)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    else:
        frame.to_parquet(path, index=False)
    return path
