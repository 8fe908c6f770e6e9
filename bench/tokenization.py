"""Tokenize-stage throughput against two anchors measured in the same run.

    ours       the whole tokenize stage (read TSVs, tokenize, pack, write Parquet + TFRecord shards,
               hash, manifest) on MRPC repeated to ~100k pairs
    tokenizers the `tokenizers` library's BertWordPieceTokenizer.encode_batch on the same pairs,
               truncated and padded to max_seq_length (raw encoding, writes nothing)
    plain      a plain pure-Python FullTokenizer (google-research/bert's algorithm char by char and
               word by word, no memo) plus packing, on a sample of the same pairs

Prints a table, then as its last line one JSON object with the figures.

    python bench/tokenization.py [--quick] [--shared ../shared] [--pairs 100000]
"""

from __future__ import annotations

import sys
import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's `tasks`, not bench/tasks.py

from bert_core import tokenization as tk  # noqa: E402
from bert_core.features import pack_ids, pad_batch  # noqa: E402
from tasks.config import DataConfig, ModelConfig  # noqa: E402
from tasks.download import RawData  # noqa: E402
from tasks.tokenize import tokenize_splits  # noqa: E402


def read_pairs(mrpc: Path) -> tuple[list[list[str]], dict[str, str]]:
    """All 5,801 MRPC rows (train, dev, test) and the header of each split."""
    rows, headers = [], {}
    for split in ("train", "dev", "test"):
        with open(mrpc / f"{split}.tsv", encoding="utf-8", newline="") as f:
            reader = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        headers[split] = "\t".join(reader[0])
        rows += [r if split != "test" else ["0", *r[1:]] for r in reader[1:]]
    return rows, headers


def write_corpus(mrpc: Path, out: Path, pairs: int) -> RawData:
    """A GLUE folder whose train.tsv repeats MRPC's pairs up to `pairs` rows in total."""
    rows, headers = read_pairs(mrpc)
    out.mkdir(parents=True)
    shutil.copy(mrpc / "dev.tsv", out / "dev.tsv")
    shutil.copy(mrpc / "test.tsv", out / "test.tsv")
    extra = 408 + 1725
    with open(out / "train.tsv", "w", encoding="utf-8", newline="\n") as f:
        f.write(headers["train"] + "\n")
        for i in range(pairs - extra):
            f.write("\t".join(rows[i % len(rows)]) + "\n")
    return RawData(data_dir=str(out), checkpoint_dir=str(out), vocab_file=str(mrpc.parent.parent
                   / "checkpoints" / "minilm-l3-h384-uncased-hf" / "vocab.txt"),
                   sha256={f"{s}.tsv": f"bench-{pairs}-{s}" for s in ("train", "dev", "test")})


def plain_tokenize(text: str, basic: tk.BasicTokenizer, wordpiece: tk.WordpieceTokenizer):
    """google-research/bert's FullTokenizer.tokenize, char by char, without any memo."""
    cleaned = []
    for char in text:
        cp = ord(char)
        if cp == 0 or cp == 0xFFFD or tk._is_control(char):
            continue
        cleaned.append(" " if tk._is_whitespace(char) else
                       f" {char} " if tk._is_chinese_char(cp) else char)
    words = tk.whitespace_tokenize("".join(cleaned))
    return [piece for word in words for part in basic.split_word(word)
            for piece in wordpiece.split_word(part)]


def time_best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="~20k pairs, one repeat")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    pairs = 20_000 if args.quick else args.pairs
    repeats = 1 if args.quick else 3
    mrpc = args.shared / "data" / "mrpc"
    if not mrpc.is_dir():
        sys.exit(f"needs MRPC in {mrpc}")

    work = Path(tempfile.mkdtemp(prefix="bench-tokenize-"))
    try:
        raw = write_corpus(mrpc, work / "glue", pairs)
        rows, _ = read_pairs(mrpc)
        rows = [rows[i % len(rows)] for i in range(pairs)]
        vocab = raw.vocab_file
        model = ModelConfig()
        runs = iter(range(1000))

        def ours():
            cfg = DataConfig(workers=args.workers)
            tokenize_splits(raw, cfg, model, work / f"home-{next(runs)}")

        from tokenizers import BertWordPieceTokenizer
        fast = BertWordPieceTokenizer(vocab, lowercase=True)
        fast.enable_truncation(model.max_seq_length)
        fast.enable_padding(length=model.max_seq_length)
        batch = [(r[3], r[4]) for r in rows]

        vocab_map = tk.load_vocab(vocab)
        basic, wordpiece = tk.BasicTokenizer(), tk.WordpieceTokenizer(vocab_map)
        sample = rows[: max(2000, pairs // 20)]

        def plain():
            packed = [pack_ids([vocab_map[t] for t in plain_tokenize(a, basic, wordpiece)],
                               [vocab_map[t] for t in plain_tokenize(b, basic, wordpiece)],
                               model.max_seq_length, 101, 102) for _, _, _, a, b in sample]
            pad_batch(packed, model.max_seq_length)

        t_ours = time_best(ours, repeats)
        t_fast = time_best(lambda: fast.encode_batch(batch), repeats)
        t_plain = time_best(plain, repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rate = {"ours_stage": pairs / t_ours, "tokenizers_encode": pairs / t_fast,
            "plain_python": len(sample) / t_plain}
    table = [f"{'':34}{'pairs/s':>10}{'ours / this':>13}"]
    for name, label in (("ours_stage", "ours: whole stage, both formats"),
                        ("tokenizers_encode", "tokenizers encode_batch (raw)"),
                        ("plain_python", "plain pure-Python FullTokenizer")):
        table.append(f"{label:34}{rate[name]:>10,.0f}{rate['ours_stage'] / rate[name]:>12.2f}x")
    print("\n".join(table))
    result = {"bench": "tokenize", "pairs": pairs, "workers": args.workers, "repeats": repeats,
              "pairs_per_s": {k: round(v, 1) for k, v in rate.items()},
              "ratio_vs_tokenizers": round(rate["ours_stage"] / rate["tokenizers_encode"], 3),
              "ratio_vs_plain_python": round(rate["ours_stage"] / rate["plain_python"], 3)}
    if not args.quick:
        (ROOT / "bench" / "results" / "tokenize.txt").write_text("\n".join(table) + "\n")
        (ROOT / "bench" / "results" / "tokenize.json").write_text(json.dumps(result) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
