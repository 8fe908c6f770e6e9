"""Where the training time of the length-grouped fine-tunes goes: what one training step costs at
each batch width, ours and Hugging Face's, and which widths each run's batches have.

bench/accuracy.py times whole runs; this script says what bounds their ratio. Per implementation,
in a process of its own, it times full training steps (forward, loss, backward, clip, AdamW) of
MiniLM-L3 with batch 32 at widths 16..128 and fits seconds(width) = a + b*width + c*width^2: `a`
is what a step costs whatever its width (the optimizer over all 11M weights, dispatch), `b` and
`c` what grows with the tokens and with attention's width^2. It then reads the widths of every
batch each run trains on, from the real MRPC train split:

    fastest          ours-plain: the train stage's batches with bench/accuracy.py's BUCKETS
    default          ours: run_classifier's batches, each cut to its longest pair
    group_by_length  HF: transformers' LengthGroupedSampler as bench/hf_run_glue.py uses it
    longest          HF: shuffled batches, each cut to its longest pair

and sums the fitted step cost over those widths: the seconds the steps of each run take, which
bench/accuracy.py's train_s (shown when its results file holds this commit's runs) adds model
loading, tracing and saving to. Two more rows price each of our runs with the other dropout.

    implementation   what runs
    ours             the model as the train stage builds it for run_classifier's batches: dropout
                     noise drawn at 128 positions and cut to the batch (layers.PaddingFreeDropout,
                     so dynamic padding trains the max_length model), the fused AdamW step, the
                     environment `bertflow run` gives TensorFlow
    ours-plain       the same with dropout drawn at the batch's own width, as the train stage
                     builds it for length-bucketed batches
    hf               BertForSequenceClassification, torch.optim.AdamW, clip_grad_norm_

    python bench/step_cost.py [--shared ../shared] [--steps 8] [--seed 1]

Writes bench/results/step_cost.{json,md} and prints the table; the last line printed is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from accuracy import (  # bench/ is this script's first sys.path entry
    BUCKETS,
    bertflow_commit,
)
from accuracy_report import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WIDTHS = (16, 32, 48, 64, 80, 96, 112, 128)
IMPLS = ("ours", "ours-plain", "hf")
BATCH, EPOCHS, SEQ = 32, 3, 128
# which implementation trains which run's batches
RUNS = {"fastest": "ours-plain", "default": "ours", "group_by_length": "hf", "longest": "hf"}
OTHER_DROPOUT = {"fastest": "ours", "default": "ours-plain"}


def step_batches(width: int, count: int, seed: int):
    """`count` batches of 32 pairs `width` wide, every row real to its last position but one."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        mask = np.ones((BATCH, width), np.int32)
        mask[:, -1] = rng.integers(0, 2, BATCH)
        ids = rng.integers(1000, 30000, (BATCH, width), dtype=np.int32) * mask
        segments = (np.arange(width)[None, :] >= width // 2).astype(np.int32) * mask
        out.append((ids, mask, segments, rng.integers(0, 2, BATCH).astype(np.int32)))
    return out


def time_ours(shared: Path, plain: bool, warmup: int, steps: int) -> dict[int, float]:
    from bert_core.backend import import_tensorflow

    import_tensorflow()
    import keras

    from bert_core.checkpoint import read_checkpoint
    from bert_core.model import BertClassifier
    from bert_core.optimizer import create_optimizer

    config = read_checkpoint(shared / "checkpoints" / "minilm-l3-h384-uncased-hf").config
    keras.utils.set_random_seed(0)
    model = BertClassifier.from_bert_config(config, num_labels=2,
                                            dropout_length=None if plain else SEQ)
    model.compile(optimizer=create_optimizer(2e-5, 10_000, 1_000),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    seconds = {}
    for width in WIDTHS:
        feed = [({"input_ids": i, "input_mask": m, "segment_ids": s}, y)
                for i, m, s, y in step_batches(width, warmup + steps, width)]
        for x, y in feed[:warmup]:
            model.train_on_batch(x, y)
        start = time.perf_counter()
        for x, y in feed[warmup:]:
            model.train_on_batch(x, y)
        seconds[width] = (time.perf_counter() - start) / steps
    return seconds


def time_hf(shared: Path, warmup: int, steps: int) -> dict[int, float]:
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    model = BertForSequenceClassification.from_pretrained(
        shared / "checkpoints" / "minilm-l3-h384-uncased-hf", num_labels=2)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)

    def step(ids, mask, segments, labels):
        optimizer.zero_grad(set_to_none=True)
        model(input_ids=ids, attention_mask=mask, token_type_ids=segments,
              labels=labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    seconds = {}
    for width in WIDTHS:
        feed = [tuple(torch.from_numpy(a).long() for a in b)
                for b in step_batches(width, warmup + steps, width)]
        for batch in feed[:warmup]:
            step(*batch)
        start = time.perf_counter()
        for batch in feed[warmup:]:
            step(*batch)
        seconds[width] = (time.perf_counter() - start) / steps
    return seconds


def schedules(shared: Path, seed: int) -> dict[str, list[int]]:
    """The width of every batch each run trains on (3 epochs of the real MRPC train split)."""
    import torch
    from evaluate import real_shards  # bench/evaluate.py
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from bert_core.inputs import TrainBatches, read_split

    with tempfile.TemporaryDirectory() as home:
        _, shards = real_shards(shared, Path(home))
        train = read_split(shards.shard_dir, "train")
    lengths = train.lengths
    steps = int(len(lengths) / BATCH * EPOCHS)  # run_classifier's num_train_steps
    out = {"fastest": TrainBatches(train, steps, BATCH, seed, bounds=BUCKETS).widths,
           "default": TrainBatches(train, steps, BATCH, seed).widths}
    sampler = LengthGroupedSampler(BATCH, lengths=lengths.tolist(),
                                   generator=torch.Generator().manual_seed(seed))
    rng = torch.Generator().manual_seed(seed)
    grouped, shuffled = [], []
    for _ in range(EPOCHS):  # the DataLoader's batches of one epoch, the last one short
        order = list(sampler)
        grouped += [int(lengths[order[i:i + BATCH]].max()) for i in range(0, len(order), BATCH)]
        order = torch.randperm(len(lengths), generator=rng).tolist()
        shuffled += [int(lengths[order[i:i + BATCH]].max()) for i in range(0, len(order), BATCH)]
    out["group_by_length"], out["longest"] = grouped, shuffled
    out["pairs"] = len(lengths)
    out["mean_length"] = float(lengths.mean())
    return out


def worker(opts) -> None:
    if opts.impl == "schedules":
        result = schedules(opts.shared, opts.seed)
    elif opts.impl == "hf":
        result = time_hf(opts.shared, opts.warmup, opts.steps)
    else:
        result = time_ours(opts.shared, opts.impl == "ours-plain", opts.warmup, opts.steps)
    print(json.dumps(result))


def in_process(impl: str, opts) -> dict:
    from flows.options import TENSORFLOW_ENV

    env = {**os.environ, **TENSORFLOW_ENV, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, "--worker", impl, "--shared", str(opts.shared),
           "--steps", str(opts.steps), "--warmup", str(opts.warmup), "--seed", str(opts.seed)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"{impl} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit(seconds: dict) -> list[float]:
    """(a, b, c) of seconds = a + b*w + c*w^2, least squares over the measured widths."""
    widths = np.array([int(w) for w in seconds], float)
    c, b, a = np.polyfit(widths, np.array(list(seconds.values())), 2)
    return [float(a), float(b), float(c)]


def cost(coef: list[float], widths: list[int]) -> dict:
    a, b, c = coef
    w = np.array(widths, float)
    return {"steps": len(widths), "mean_width": float(w.mean()),
            "fixed_s": a * len(w), "tokens_s": float((b * w).sum()),
            "attention_s": float((c * w * w).sum()), "total_s": float((a + b * w + c * w * w).sum())}


def table(figures: dict) -> str:
    lines = ["| implementation | " + " | ".join(f"w={w}" for w in WIDTHS) + " | a (s/step) | "
             "b (ms/position) | c (us/position^2) |", "|---" * (len(WIDTHS) + 4) + "|"]
    for impl in IMPLS:
        s, (a, b, c) = figures["step_s"][impl], figures["fit"][impl]
        lines.append(f"| {impl} | " + " | ".join(f"{s[str(w)]:.3f}" for w in WIDTHS)
                     + f" | {a:.3f} | {b * 1e3:.2f} | {c * 1e6:.2f} |")
    lines += ["", "| run | trained by | steps | mean width | fixed s | tokens s | attention s | "
              "steps s | measured train_s |", "|---" * 9 + "|"]
    for key, row in figures["runs"].items():
        measured = figures["measured_train_s"].get(key.split(" ")[0])
        lines.append(f"| {key} | {row['impl']} | {row['steps']} | {row['mean_width']:.1f} | "
                     f"{row['fixed_s']:.1f} | {row['tokens_s']:.1f} | {row['attention_s']:.1f} | "
                     f"{row['total_s']:.1f} | "
                     + (f"{measured:.1f}" if measured and key in RUNS else "-")
                     + " |")
    lines += ["", "| ratio | steps s |", "|---|---:|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in figures["ratios"].items()]
    cpu = figures["cpu"]
    lines += ["", f"CPU: {cpu['model']}, {cpu['cores']} cores, {' '.join(cpu['flags'])}; "
                  f"commit {figures['commit']}; seed {figures['seed']}; {figures['steps']} timed "
                  f"steps per width after {figures['warmup']} warm-up"]
    return "\n".join(lines)


def measured_train_s(commit: str, cpu: dict) -> dict[str, float]:
    """Mean train_s per variant of bench/accuracy.py's recipe runs of this commit and CPU."""
    log = RESULTS / "accuracy.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] \
        if log.is_file() else []
    rows = [r for r in rows if r["commit"] == commit and r["cpu"] == cpu and r["setting"] == "recipe"]
    out = {}
    for variant in RUNS:
        values = [r["train_s"] for r in rows if r["variant"] == variant]
        if values:
            out[variant] = float(np.mean(values))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per width")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per width (tracing)")
    parser.add_argument("--seed", type=int, default=1, help="the shuffle seed of the schedules")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", choices=(*IMPLS, "schedules"), dest="impl",
                        help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.impl:
        return worker(opts)
    if not (opts.shared / "checkpoints").is_dir():
        sys.exit(f"{opts.shared}: no real checkpoints here (--shared)")
    sched = in_process("schedules", opts)
    step_s = {}
    for impl in IMPLS:
        step_s[impl] = in_process(impl, opts)
        print(f"{impl}: " + ", ".join(f"{w}: {s:.3f}" for w, s in step_s[impl].items()), flush=True)
    coef = {impl: fit(s) for impl, s in step_s.items()}
    runs = {name: {"impl": impl, **cost(coef[impl], sched[name])} for name, impl in RUNS.items()}
    for name, impl in OTHER_DROPOUT.items():
        runs[f"{name} with {impl} dropout"] = {"impl": impl, **cost(coef[impl], sched[name])}
    t = {k: v["total_s"] for k, v in runs.items()}
    ratios = {"fastest / group_by_length": t["fastest"] / t["group_by_length"],
              "fastest with ours dropout / group_by_length":
                  t["fastest with ours dropout"] / t["group_by_length"],
              "default / longest": t["default"] / t["longest"]}
    here = machine()
    cpu, commit, versions = here["cpu"], bertflow_commit(), here["versions"]
    figures = {"commit": commit, "cpu": cpu, "versions": versions, "seed": opts.seed,
               "steps": opts.steps, "warmup": opts.warmup, "pairs": sched["pairs"],
               "mean_length": sched["mean_length"], "step_s": step_s, "fit": coef, "runs": runs,
               "ratios": ratios, "measured_train_s": measured_train_s(commit, cpu),
               "utc": datetime.now(UTC).isoformat(timespec="seconds")}
    text = table(figures)
    print(text)
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "step_cost.md").write_text(text + "\n")
    (opts.out / "step_cost.json").write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
