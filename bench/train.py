"""Training throughput and peak memory: our Keras BERT against Hugging Face transformers on PyTorch
(extra `parity`), same config, same batches, measured side by side in one run on this CPU.

    configs    BERT-Tiny (L2 H128 A2) and MiniLM-L3 (L3 H384 A12), vocab 30522, 2 labels
    batches    32 pairs whose real lengths follow MRPC's train split (tokenized from ../shared when
               present, else a normal(53, 15) stand-in), padded to 128 ("padded"), or each batch
               cut to the bucket its longest pair falls in ("bucketed": our train task's
               `bucket_boundaries`, the same tf.data bucketing)
    step       forward, cross-entropy, backward, global-norm clip 1.0, AdamW update
    timing     the steps after warm-up steps (tracing), examples/second; each measurement in a
               process of its own, whose peak RSS is reported
    runs       keras: ours as `bertflow run` trains, with the environment it sets (flows/cli.py
               TENSORFLOW_ENV: TensorFlow's pooled CPU allocator) and the fused AdamW step;
               what each is worth: keras-malloc (TensorFlow's default allocator), keras-unfused
               (the portable keras.ops AdamW step, as on JAX); keras-xla: the train step
               XLA-compiled; keras-bf16: mixed bfloat16 (`train.precision`); hf: the anchor;
               hf-bf16: its forward passes under torch.autocast("cpu", torch.bfloat16)

Prints a table of ratios (ours / HF) and, as its last line, one JSON object with the figures.

    python bench/train.py [--quick] [--shared ../shared] [--steps 30] [--configs tiny minilm]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from accuracy import BUCKETS  # bench/ is this script's first sys.path entry
from accuracy_report import machine

ROOT = Path(__file__).resolve().parents[1]
IMPLS = ["keras", "keras-malloc", "keras-unfused", "keras-xla", "keras-bf16", "hf", "hf-bf16"]
SEQ, BATCH, LABELS = 128, 32, 2
CONFIGS = {"tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=512),
           "minilm": dict(hidden_size=384, num_hidden_layers=3, num_attention_heads=12,
                          intermediate_size=1536)}


def mrpc_lengths(shared: Path, n: int, seed: int = 0) -> np.ndarray:
    """Packed lengths ([CLS] a [SEP] b [SEP], capped at 128) of MRPC train pairs, cycled to n."""
    rng = np.random.default_rng(seed)
    train = shared / "data" / "mrpc" / "train.tsv"
    vocab = shared / "checkpoints" / "minilm-l3-h384-uncased-hf" / "vocab.txt"
    if train.is_file() and vocab.is_file():
        sys.path.insert(0, str(ROOT))
        from bert_core.tokenization import FullTokenizer
        from data_contracts.reader import read_tsv

        tokenizer = FullTokenizer(str(vocab))
        frame = read_tsv(train)
        lengths = np.array([min(SEQ, 3 + len(tokenizer.tokenize(a)) + len(tokenizer.tokenize(b)))
                            for a, b in zip(frame["#1 String"], frame["#2 String"])])
    else:
        lengths = np.clip(rng.normal(53, 15, 4096).round(), 8, SEQ).astype(int)
    return rng.permutation(np.resize(lengths, n))


def batches(lengths: np.ndarray, steps: int, boundaries: list[int] | None, seed: int = 0):
    """`steps` batches of (ids, mask, segments, labels) as int32 numpy arrays. With
    `boundaries`, pairs are grouped by the bucket their length falls in (as tf.data's
    bucket_by_sequence_length does) and each batch is padded to its bucket's upper bound."""
    rng = np.random.default_rng(seed)
    out, pool = [], list(lengths)
    while len(out) < steps:
        if boundaries:
            bucket_of = np.searchsorted(boundaries, pool, side="left")
            first = bucket_of[0]
            chosen = [i for i, b in enumerate(bucket_of) if b == first][:BATCH]
            width = boundaries[first] if first < len(boundaries) else SEQ
        else:
            chosen, width = list(range(BATCH)), SEQ
        if len(chosen) < BATCH:  # the bucket ran dry: start the pool over
            pool = list(rng.permutation(lengths))
            continue
        picked = [pool[i] for i in chosen]
        pool = [x for i, x in enumerate(pool) if i not in set(chosen)]
        mask = (np.arange(width)[None, :] < np.array(picked)[:, None]).astype(np.int32)
        ids = rng.integers(1000, 30000, (BATCH, width), dtype=np.int32) * mask
        segments = (np.arange(width)[None, :] >= (np.array(picked)[:, None] // 2)) * mask
        out.append((ids, mask, segments.astype(np.int32),
                    rng.integers(0, LABELS, BATCH).astype(np.int32)))
    return out


def run_keras(config: dict, data, warmup: int, jit: bool, fused: bool = True,
              precision: str = "float32") -> float:
    from bert_core.backend import import_tensorflow

    import_tensorflow()  # as the train task does: without JAX, which the dev extra installs
    import keras

    from bert_core.config import BertConfig
    from bert_core.model import BertClassifier
    from bert_core.optimizer import create_optimizer

    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(precision)
    model = BertClassifier.from_bert_config(BertConfig(**config), num_labels=LABELS)
    optimizer = create_optimizer(2e-5, 10_000, 1_000)
    optimizer.fused = fused
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    feed = [({"input_ids": i, "input_mask": m, "segment_ids": s}, y) for i, m, s, y in data]
    for x, y in feed[:warmup]:
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for x, y in feed[warmup:]:
        model.train_on_batch(x, y)
    return time.perf_counter() - start


def run_hf(config: dict, data, warmup: int, bf16: bool = False) -> float:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    model = BertForSequenceClassification(BertConfig(**config, num_labels=LABELS,
                                                     hidden_act="gelu"))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    feed = [tuple(torch.from_numpy(a).long() for a in batch) for batch in data]

    def step(ids, mask, segments, labels):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=mask, token_type_ids=segments,
                         labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for batch in feed[:warmup]:
        step(*batch)
    start = time.perf_counter()
    for batch in feed[warmup:]:
        step(*batch)
    return time.perf_counter() - start


def worker(args) -> None:
    """One measurement in this process; prints {"examples_per_second", "peak_rss_mb", ...}."""
    config = {**CONFIGS[args.config], "vocab_size": 30522}
    boundaries = [int(b) for b in args.buckets.split(",")] if args.bucketed else None
    steps = args.warmup + args.steps
    data = batches(mrpc_lengths(args.shared, steps * BATCH * 2), steps, boundaries)
    if args.impl.startswith("hf"):
        seconds = run_hf(config, data, args.warmup, bf16=args.impl == "hf-bf16")
    else:
        seconds = run_keras(config, data, args.warmup, jit=args.impl == "keras-xla",
                            fused=args.impl != "keras-unfused",
                            precision="mixed_bfloat16" if args.impl == "keras-bf16" else "float32")
    tokens = sum(int(b[1].shape[1]) for b in data[args.warmup:]) / args.steps
    print(json.dumps({"examples_per_second": args.steps * BATCH / seconds,
                      "mean_padded_length": tokens,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(impl: str, config: str, buckets: str | None, opts) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--config", config,
           "--steps", str(opts.steps), "--warmup", str(opts.warmup), "--shared", str(opts.shared)]
    if buckets:
        cmd += ["--bucketed", "--buckets", buckets]
    from flows.options import TENSORFLOW_ENV

    # ours runs with the environment `bertflow run` gives TensorFlow (its pooled CPU allocator);
    # keras-malloc with TensorFlow's default allocator, to show what that choice is worth
    env = {**os.environ, **TENSORFLOW_ENV, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    if impl == "keras-malloc":
        env["TF_CPU_ALLOCATOR_USE_BFC"] = "false"
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{impl} {config} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 timed steps")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=IMPLS)
    parser.add_argument("--buckets", default=",".join(map(str, BUCKETS)),
                        help="upper bounds of the length buckets (the last one is 128); default: "
                             "every 2 positions, as bench/accuracy.py trains")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--bucketed", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.worker:
        return worker(opts)
    if opts.quick:
        opts.steps, opts.warmup = 10, 3
    results = {}
    for config in opts.configs:
        for impl in opts.impls:
            results[f"{config}/{impl}/padded"] = measure(impl, config, None, opts)
            print(f"{config} {impl} padded: {results[f'{config}/{impl}/padded']}", flush=True)
        for impl in [i for i in opts.impls if i.startswith("keras")]:
            results[f"{config}/{impl}/bucketed"] = measure(impl, config, opts.buckets, opts)
            print(f"{config} {impl} bucketed: {results[f'{config}/{impl}/bucketed']}", flush=True)
    here = machine()
    figures = {"steps": opts.steps, "batch": BATCH, "results": results, **here}
    text = table(results, opts.configs) + (
        f"\n\nCPU: {here['cpu']['model']}, {here['cpu']['cores']} cores, "
        f"{' '.join(here['cpu']['flags'])}; " + ", ".join(f"{k} {v}" for k, v in
                                                           here["versions"].items()))
    print(text)
    if not opts.quick:
        out = ROOT / "bench" / "results"
        (out / "train.md").write_text(text + "\n")
        (out / "train.json").write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))


def table(results: dict, configs: list[str]) -> str:
    lines = ["| config | run | examples/s | / HF padded | peak RSS MB | / HF |", "|---" * 6 + "|"]
    for config in configs:
        anchor = results.get(f"{config}/hf/padded")
        for key, r in results.items():
            if not key.startswith(config + "/"):
                continue
            ratio = f"{r['examples_per_second'] / anchor['examples_per_second']:.2f}x" \
                if anchor else "-"
            mem = f"{r['peak_rss_mb'] / anchor['peak_rss_mb']:.2f}x" if anchor else "-"
            lines.append(f"| {config} | {key.split('/', 1)[1]} | {r['examples_per_second']:.1f} | "
                         f"{ratio} | {r['peak_rss_mb']:.0f} | {mem} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
