"""On a GPU machine, Keras on JAX (TensorFlow is not installed there): our Keras BERT's training
throughput at BERT-base size, and a many-seed search for a better MRPC recipe than the original.

    pack     here, where ../shared is: the real MRPC train and dev pairs packed to 128 by our
             tokenizer, and the real MiniLM-L3 weights (Hugging Face layout, no TensorFlow needed),
             into one .npz. The word-embedding table keeps only the rows MRPC uses (ids remapped):
             no other row enters an output or a gradient, and the file then fits the 64 MiB that
             travels to the GPU machine.
    speed    examples/s of our training step (forward, cross-entropy, backward, global-norm clip
             1.0, our AdamW) on BERT-base (L12 H768 A12, vocab 30522), seq 128: float32 batch 32,
             mixed bfloat16 batch 32 and 128, after warm-up steps (tracing and compiling)
    search   run_classifier's fine-tune of MiniLM-L3 (our model, checkpoint loader and optimizer;
             dropout 0.1, fresh pooler and head, int(n / batch * epochs) steps over a reshuffled
             stream of the train pairs, padded to 128) for each learning rate x epochs x seed,
             jobs spread over worker processes that share the GPU; dev accuracy and F1 per run.
             A setting that leads here is then measured on the CPU by bench/accuracy.py.
    report   here: bench/results/gpu.md and gpu.json from the files a GPU run brought back

Each search run is appended to --out as one JSON line when it ends; the last line printed is one
JSON object with the figures.

    python bench/gpu.py pack [--shared ../shared] [--data .gpu/mrpc_minilm.npz]
    KERAS_BACKEND=jax python bench/gpu.py speed [--quick]
    KERAS_BACKEND=jax python bench/gpu.py search [--data ...] [--workers 8] [--seeds 1 2 3 4 5]
    python bench/gpu.py report --speed speed.log --runs gpu_search.jsonl [...]

bench/results/gpu_search.jsonl holds two searches: the default grid with seeds 1-5, then
`--learning-rates 2e-5 3e-5 5e-5 8e-5 --epochs 1 1.5 2 3 --seeds 5 6 7 8 9 10` (each stopped by
its time limit: 82 and 80 runs).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SEQ = 128
LEARNING_RATES = (1e-5, 2e-5, 3e-5, 5e-5, 1e-4)
EPOCHS = (2.0, 3.0, 5.0, 8.0)


# --- pack (here) ----------------------------------------------------------------------------------

def pack(shared: Path, out: Path) -> None:
    from bert_core.checkpoint import read_checkpoint
    from bert_core.features import encode_pairs
    from bert_core.tokenization import FullTokenizer
    from data_contracts.reader import read_tsv

    hf_dir = shared / "checkpoints" / "minilm-l3-h384-uncased-hf"
    tokenizer = FullTokenizer(str(hf_dir / "vocab.txt"))
    arrays = {}
    for split in ("train", "dev"):
        frame = read_tsv(shared / "data" / "mrpc" / f"{split}.tsv")
        features = encode_pairs(tokenizer, list(frame["#1 String"]), list(frame["#2 String"]), SEQ)
        arrays.update({f"{split}/{k}": v for k, v in features.as_dict().items()})
        arrays[f"{split}/labels"] = frame["Quality"].astype(np.int32).to_numpy()
    used = np.unique(np.concatenate([arrays[f"{s}/input_ids"].ravel() for s in ("train", "dev")]))
    for split in ("train", "dev"):  # ids -> rows of the kept table; 0 ([PAD]) stays 0
        arrays[f"{split}/input_ids"] = np.searchsorted(used, arrays[f"{split}/input_ids"]) \
            .astype(np.int32)
    checkpoint = read_checkpoint(hf_dir)
    for name, value in checkpoint.weights.items():
        arrays[f"weights/{name}"] = value[used] if name == "bert/embeddings/word_embeddings" \
            else value
    config = {**checkpoint.config.to_dict(), "vocab_size": len(used)}
    arrays["config"] = np.array(json.dumps(config))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out)
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB, vocab {config['vocab_size']} of "
          f"{checkpoint.config.vocab_size} rows, {len(arrays['train/labels'])} train and "
          f"{len(arrays['dev/labels'])} dev pairs")


# --- speed (there) --------------------------------------------------------------------------------

SPEED_RUNS = (("float32", 32), ("mixed_bfloat16", 32), ("mixed_bfloat16", 128))


def speed(quick: bool, tiny: bool = False) -> dict:
    import jax
    import keras

    from bert_core.config import BertConfig

    warmup, steps = (2, 5) if quick else (5, 40)
    config = BertConfig.tiny() if tiny else BertConfig()
    results = {"device": str(jax.devices()[0].device_kind), "backend": keras.backend.backend(),
               "config": config.to_dict(), "seq": SEQ, "warmup_steps": warmup,
               "timed_steps": steps, "runs": []}
    for policy, batch in SPEED_RUNS:
        try:
            run = {"policy": policy, "batch": batch, **speed_run(config, policy, batch, warmup,
                                                                 steps)}
        except Exception as err:  # noqa: BLE001 - one failed variant must not lose the others
            run = {"policy": policy, "batch": batch, "error": repr(err)[:500]}
        results["runs"].append(run)
        print(json.dumps(run), flush=True)
    return results


def speed_run(config, policy: str, batch: int, warmup: int, steps: int) -> dict:
    """`warmup` steps (tracing, compiling), then `steps` timed ones, of fit on random pairs."""
    import keras

    from bert_core.model import BertClassifier
    from bert_core.optimizer import create_optimizer

    keras.backend.clear_session()
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = BertClassifier.from_bert_config(config)
        model.compile(optimizer=create_optimizer(2e-5, 10_000, 1_000),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    finally:
        keras.config.set_dtype_policy("float32")
    rng = np.random.default_rng(0)
    n = batch * (warmup + steps)
    x = {"input_ids": rng.integers(1000, 30000, (n, SEQ), dtype=np.int32),
         "input_mask": np.ones((n, SEQ), np.int32),
         "segment_ids": (np.arange(SEQ)[None, :] >= SEQ // 2).repeat(n, 0).astype(np.int32)}
    y = rng.integers(0, 2, n).astype(np.int32)
    cut = batch * warmup
    start = time.perf_counter()
    model.fit({k: v[:cut] for k, v in x.items()}, y[:cut], batch_size=batch, verbose=0)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    history = model.fit({k: v[cut:] for k, v in x.items()}, y[cut:], batch_size=batch,
                        shuffle=False, verbose=0)  # fetching the epoch's loss waits for the GPU
    seconds = time.perf_counter() - start
    return {"examples_per_second": steps * batch / seconds, "step_ms": 1000 * seconds / steps,
            "warmup_s": round(warmup_s, 1),
            "params": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
            "loss": float(history.history["loss"][-1])}


# --- search (there) -------------------------------------------------------------------------------

def finetune(data, learning_rate: float, epochs: float, seed: int, batch: int = 32,
             warmup_proportion: float = 0.1) -> dict:
    """One run_classifier fine-tune of the packed MiniLM-L3 on MRPC train; dev metrics."""
    import keras
    from sklearn.metrics import accuracy_score, f1_score

    from bert_core.checkpoint import PretrainedCheckpoint, load_pretrained
    from bert_core.config import BertConfig
    from bert_core.features import PARAPHRASE
    from bert_core.model import BertClassifier
    from bert_core.optimizer import create_optimizer, train_steps

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    config = BertConfig(**json.loads(str(data["config"])))
    weights = {k.removeprefix("weights/"): data[k] for k in data if k.startswith("weights/")}
    model = BertClassifier.from_bert_config(config)
    load_pretrained(model, PretrainedCheckpoint(config, weights, "minilm-l3 (packed)", "huggingface"))
    n = len(data["train/labels"])
    steps, warmup = train_steps(n, batch, epochs, warmup_proportion)
    model.compile(optimizer=create_optimizer(learning_rate, steps, warmup),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # repeat -> shuffle -> batch, as run_classifier's input_fn: `steps` full batches
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(n) for _ in range(math.ceil(steps * batch / n) + 1)])
    order = order[:steps * batch]
    x = {k: data[f"train/{k}"][order] for k in ("input_ids", "input_mask", "segment_ids")}
    start = time.perf_counter()
    history = model.fit(x, data["train/labels"][order], batch_size=batch, shuffle=False, verbose=0)
    seconds = time.perf_counter() - start
    dev = {k: data[f"dev/{k}"] for k in ("input_ids", "input_mask", "segment_ids")}
    predictions = np.argmax(model.predict(dev, batch_size=256, verbose=0), -1)
    labels = data["dev/labels"]
    return {"learning_rate": learning_rate, "epochs": epochs, "seed": seed, "batch_size": batch,
            "warmup_proportion": warmup_proportion, "steps": steps,
            "accuracy": float(accuracy_score(labels, predictions)),
            "f1": float(f1_score(labels, predictions, pos_label=PARAPHRASE, zero_division=0)),
            "positive_share": float(np.mean(predictions == PARAPHRASE)),
            "final_loss": float(history.history["loss"][-1]), "train_s": round(seconds, 2)}


_DATA, _DEADLINE = None, math.inf


def _worker_init(path: str, deadline: float) -> None:
    global _DATA, _DEADLINE
    archive = np.load(path)
    _DATA, _DEADLINE = {k: archive[k] for k in archive.files}, deadline


def _job(args: tuple) -> dict | None:
    if time.time() > _DEADLINE:  # the pool queues every job at once: the budget is checked here
        return None
    try:
        return finetune(_DATA, *args)
    except Exception as err:  # noqa: BLE001 - reported with its job; the search goes on
        return dict(zip(("learning_rate", "epochs", "seed", "batch_size"), args),
                    error=repr(err)[:500])


def search(data: Path, out: Path, workers: int, seeds: list[int], learning_rates, epochs,
           budget_s: float | None = None, batch: int = 32) -> dict:
    jobs = [(lr, ep, seed, batch) for seed in seeds for ep in sorted(epochs, reverse=True)
            for lr in learning_rates]  # every setting's first seed before any second one
    # Each worker is a JAX process on the one GPU: memory grows as needed instead of 75% each.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    runs, start = [], time.perf_counter()
    deadline = time.time() + (budget_s if budget_s is not None else math.inf)
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, _worker_init, (str(data), deadline)) as pool, open(out, "a") as log:
        for run in pool.imap_unordered(_job, jobs):
            if run is None:
                continue
            run["elapsed_s"] = round(time.perf_counter() - start, 1)
            runs.append(run)
            log.write(json.dumps(run) + "\n")
            log.flush()
            print(json.dumps(run), flush=True)
    if len(runs) < len(jobs):
        print(f"budget of {budget_s:g} s spent: {len(runs)} of {len(jobs)} runs done", flush=True)
    return {"runs": len(runs), "wall_s": round(time.perf_counter() - start, 1),
            "settings": summarize(runs)}


def summarize(runs: list[dict]) -> list[dict]:
    """Per (learning rate, epochs, batch): mean and sd of dev accuracy and F1 over seeds, best
    first."""
    groups: dict[tuple, list[dict]] = {}
    for run in (r for r in runs if "error" not in r):
        groups.setdefault((run["learning_rate"], run["epochs"], run["batch_size"]), []).append(run)
    rows = []
    for (lr, ep, batch), group in groups.items():
        acc, f1 = [r["accuracy"] for r in group], [r["f1"] for r in group]
        rows.append({"learning_rate": lr, "epochs": ep, "batch_size": batch, "seeds": len(group),
                     "accuracy": statistics.fmean(acc), "accuracy_sd": _sd(acc),
                     "f1": statistics.fmean(f1), "f1_sd": _sd(f1)})
    return sorted(rows, key=lambda r: -r["accuracy"])


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def table(rows: list[dict]) -> str:
    lines = ["| lr | epochs | batch | seeds | dev accuracy | dev F1 |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['learning_rate']:g} | {r['epochs']:g} | {r['batch_size']} | {r['seeds']} | "
              f"{r['accuracy']:.4f} "
              f"+/- {r['accuracy_sd']:.4f} | {r['f1']:.4f} +/- {r['f1_sd']:.4f} |" for r in rows]
    return "\n".join(lines)


# --- report (here) -------------------------------------------------------------------------------

def flops_per_token(config: dict, seq: int) -> float:
    """Training FLOPs per token: 6 x the non-embedding weights (forward 2, backward 4) plus the
    attention products (QK^T and AV, 2 x 2 x seq x hidden per layer forward), also x 3."""
    h, layers, inter = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
    weights = layers * (4 * h * h + 2 * h * inter)
    return 6 * weights + 3 * layers * 4 * seq * h


def report(speed_log: Path, run_files: list[Path], out: Path) -> dict:
    speed_figures = json.loads(speed_log.read_text().strip().splitlines()[-1])
    runs = [json.loads(line) for f in run_files for line in f.read_text().splitlines()]
    runs = [r for r in runs if "error" not in r]
    per_token = flops_per_token(speed_figures["config"], speed_figures["seq"])
    lines = [f"# bench/gpu.py on one {speed_figures['device']}, Keras {speed_figures['backend']}",
             "", "## Training step, BERT-base (L12 H768 A12), seq 128, our AdamW", "",
             "| policy | batch | examples/s | step ms | / float32 batch 32 | model TFLOP/s |",
             "|---|---:|---:|---:|---:|---:|"]
    anchor = speed_figures["runs"][0]["examples_per_second"]
    for r in speed_figures["runs"]:
        if "error" in r:
            lines.append(f"| {r['policy']} | {r['batch']} | failed: {r['error'][:80]} | | | |")
            continue
        tflops = r["examples_per_second"] * speed_figures["seq"] * per_token / 1e12
        lines.append(f"| {r['policy']} | {r['batch']} | {r['examples_per_second']:.0f} | "
                     f"{r['step_ms']:.1f} | {r['examples_per_second'] / anchor:.2f}x | "
                     f"{tflops:.0f} |")
    rows = summarize(runs)
    cell = {(r["learning_rate"], r["epochs"]): r for r in rows if r["batch_size"] == 32}
    lrs, epochs = sorted({lr for lr, _ in cell}), sorted({e for _, e in cell})
    lines += ["", "## MRPC fine-tune of MiniLM-L3, batch 32: dev accuracy, mean over seeds (seeds)",
              "",
              "| lr \\ epochs | " + " | ".join(f"{e:g}" for e in epochs) + " |",
              "|---:|" + "---:|" * len(epochs)]
    for lr in lrs:
        lines.append(f"| {lr:g} | " + " | ".join(
            f"{cell[lr, e]['accuracy']:.4f} ({cell[lr, e]['seeds']})" if (lr, e) in cell else ""
            for e in epochs) + " |")
    lines += ["", "Best first:", "", table(rows)]
    figures = {"speed": speed_figures, "flops_per_token": per_token, "search": rows,
               "runs": len(runs)}
    (out / "gpu.md").write_text("\n".join(lines) + "\n")
    (out / "gpu.json").write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["pack", "speed", "search", "report"])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--data", type=Path, default=ROOT / ".gpu" / "mrpc_minilm.npz")
    parser.add_argument("--out", type=Path, default=Path("gpu_search.jsonl"))
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--learning-rates", type=float, nargs="+", default=list(LEARNING_RATES))
    parser.add_argument("--epochs", type=float, nargs="+", default=list(EPOCHS))
    parser.add_argument("--speed", type=Path, help="report: the speed run's output")
    parser.add_argument("--runs", type=Path, nargs="+", help="report: search runs (JSON lines)")
    parser.add_argument("--quick", action="store_true",
                        help="speed: 5 timed steps; search: the recipe, one seed, 0.1 epoch")
    parser.add_argument("--tiny", action="store_true", help="speed: BERT-Tiny (a smoke test)")
    parser.add_argument("--batch-size", type=int, default=32, help="search: train batch")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="search: start no run after this many seconds")
    opts = parser.parse_args()
    if opts.mode == "pack":
        return pack(opts.shared, opts.data)
    if opts.mode == "report":
        print(json.dumps(report(opts.speed, opts.runs, ROOT / "bench" / "results")))
        return
    if opts.mode == "speed":
        figures = speed(opts.quick, opts.tiny)
        print(json.dumps(figures))
        return
    if opts.quick:
        opts.seeds, opts.learning_rates, opts.epochs = opts.seeds[:1], [2e-5], [0.1]
    figures = search(opts.data, opts.out, opts.workers, opts.seeds, opts.learning_rates,
                     opts.epochs, opts.budget_s, opts.batch_size)
    print(table(figures["settings"]))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
