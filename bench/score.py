"""Batch scoring at scale: `bertflow score` on a file of a million MRPC-shaped pairs, its
throughput and its peak memory, in a fresh process as a user runs it.

    model      BERT-Tiny's architecture (BertConfig.tiny(): 2 layers, hidden 128, 2 heads),
               random weights, over the uncased 30,522-token vocab of ../shared's MiniLM
               (the tests' tiny vocab without it), max_seq_length 128; registered in a temp
               home's store as bertflow-mrpc version 1, champion, by the register code
               (log_training_run, register_and_promote). Throughput does not depend on the
               weights' values.
    input      the real MRPC pairs (../shared/data/mrpc train, dev, test: 5,801 pairs)
               repeated to --rows rows, in GLUE's test.tsv layout (index, #1 ID, #2 ID,
               #1 String, #2 String); generated sentences without ../shared
    run        `bertflow score --input pairs.tsv --output scores.parquet --home HOME
               --chunk-rows N`, its RSS (and that of its process tree: the temporary Prefect
               API server) polled every 50 ms (tests/test_score.py score_with_memory)

Writes score.json and score.md to --out (bench/results); the last line printed is one JSON
object.

    python bench/score.py                  # 1,000,000 rows
    python bench/score.py --rows 20000 --out /tmp/score-bench   # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SHARED = ROOT.parent / "shared"
MAX_SEQ_LENGTH = 128


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def mrpc_pairs(shared: Path) -> list[tuple[str, str]]:
    """Every pair of ../shared's MRPC files; generated ones without them."""
    files = [shared / "data" / "mrpc" / f"{name}.tsv" for name in ("train", "dev", "test")]
    if not all(f.is_file() for f in files):
        from tests.task_files import sentence

        rng = random.Random(0)
        return [(sentence(rng), sentence(rng)) for _ in range(5000)]
    pairs = []
    for file in files:
        lines = file.read_text(encoding="utf-8-sig").splitlines()[1:]
        pairs += [tuple(line.split("\t")[3:5]) for line in lines]
    return pairs


def write_input(path: Path, rows: int, pairs: list[tuple[str, str]]) -> Path:
    """`rows` rows in GLUE's MRPC test.tsv layout, the pairs repeated in order."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("index\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
        for i in range(rows):
            a, b = pairs[i % len(pairs)]
            f.write(f"{i}\t{2 * i}\t{2 * i + 1}\t{a}\t{b}\n")
    return path


def register_tiny(root: Path, home: Path, vocab: list[str]) -> str:
    """BERT-Tiny with a random head, registered as the champion of bertflow-mrpc."""
    import keras

    from bert_core.config import BertConfig
    from bert_core.model import BertClassifier
    from tasks.config import RegistryConfig
    from tasks.mlflow_store import open_store
    from tasks.promotion import register_and_promote
    from tasks.records import TrainedModel
    from tasks.register import log_training_run
    from tasks.serving import for_task_name
    from tests.served_models import HISTORY, decided, write_report

    folder = root / "model"
    folder.mkdir(parents=True)
    keras.utils.set_random_seed(0)
    config = dataclasses.replace(BertConfig.tiny(), vocab_size=len(vocab))
    model = BertClassifier.from_bert_config(config)
    model.save(folder / "model.keras")
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    (folder / "history.json").write_text(json.dumps(HISTORY))
    trained = TrainedModel(model_dir=str(folder), model_sha256="0" * 64, steps=1, seconds=1.0,
                           init="scratch", max_seq_length=MAX_SEQ_LENGTH, do_lower_case=True,
                           labels=("0", "1"), task="mrpc", pair=True)
    cfg = for_task_name(RegistryConfig(), "mrpc")
    client, experiment_id = open_store(cfg, home)
    run_id = log_training_run(client, experiment_id, trained,
                              write_report(root / "report", {"f1": 0.8}), {}, {}, [])
    version = register_and_promote(client, run_id, cfg, lambda n: decided("promoted", 0.8))
    return f"models:/bertflow-mrpc/{version.version}"


def vocab_tokens() -> tuple[list[str], str]:
    vocab = SHARED / "checkpoints" / "minilm-l3-h384-uncased-hf" / "vocab.txt"
    if vocab.is_file():
        return vocab.read_text(encoding="utf-8").splitlines(), str(vocab.relative_to(SHARED))
    from tests.fixtures import tiny_vocab

    return tiny_vocab(), "tests' tiny vocab"


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def write_results(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "score.json").write_text(json.dumps(result, indent=2) + "\n")
    mib = 2 ** 20
    (out / "score.md").write_text(
        f"# Batch scoring: `bertflow score` on {result['rows']:,} pairs\n\n"
        f"{result['model']}; input {result['input']}; commit {result['commit']}, "
        f"{result['cpu']} ({result['cpus']} CPUs, load average {result['load_average']} at "
        "the start).\n\n"
        "| rows | scored | rejected | chunk rows | wall s | rows/s | peak RSS (MiB) | "
        "peak RSS of the process tree (MiB) |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {result['rows']:,} | {result['scored']:,} | {result['rejected']:,} | "
        f"{result['chunk_rows']} | {result['wall_s']:.1f} | {result['rows_per_s']:.0f} | "
        f"{result['peak_rss'] / mib:.0f} | {result['peak_rss_tree'] / mib:.0f} |\n\n"
        f"rows/s is over the whole command (start-up, model load, Prefect's temporary API "
        f"server); the score task alone: {result['task_rows_per_s']:.0f} rows/s.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=8192)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    from tests.test_score import score_with_memory

    with tempfile.TemporaryDirectory(prefix="bertflow-score-bench-") as tmp:
        root = Path(tmp)
        home = root / "home"
        vocab, vocab_name = vocab_tokens()
        uri = register_tiny(root, home, vocab)
        pairs = mrpc_pairs(SHARED)
        source = write_input(root / "pairs.tsv", args.rows, pairs)
        load = os.getloadavg()[0]
        started = time.monotonic()
        done, peak, tree = score_with_memory(
            ["score", "--input", str(source), "--output", str(root / "scores.parquet"),
             "--chunk-rows", str(args.chunk_rows), "--json"], home, timeout_s=6 * 3600)
        wall = time.monotonic() - started
        if done.returncode != 0:
            sys.exit(f"bertflow score failed:\n{done.stderr[-4000:]}")
        summary = json.loads(done.stdout.strip().splitlines()[-1])
    result = {"rows": args.rows, "scored": summary["scored"], "rejected": summary["rejected"],
              "chunk_rows": args.chunk_rows, "wall_s": round(wall, 2),
              "rows_per_s": args.rows / wall, "task_rows_per_s": summary["rows_per_second"],
              "peak_rss": peak, "peak_rss_tree": tree, "model_uri": uri,
              "model": f"BERT-Tiny (L=2, H=128, A=2), random weights, vocab {vocab_name} "
                       f"({len(vocab)} tokens), max_seq_length {MAX_SEQ_LENGTH}",
              "input": f"{len(pairs)} MRPC pairs repeated" if SHARED.is_dir() else
                       "generated pairs", "cpu": cpu_model(), "cpus": os.cpu_count(),
              "load_average": round(load, 2), "commit": commit()}
    write_results(args.out, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
