"""On a GPU machine, Keras on JAX (TensorFlow is not installed there): our Keras BERT's training
throughput at BERT-base size, and the MRPC fine-tune of MiniLM-L3 through bert_core's trainer.

    pack      here, where ../shared is: the real MRPC train and dev pairs packed to 128 by our
              tokenizer, and the real MiniLM-L3 weights (Hugging Face layout, no TensorFlow
              needed), into one .npz. The word-embedding table keeps only the rows MRPC uses (ids
              remapped): no other row enters an output or a gradient, and the file then fits the
              64 MiB that travels to the GPU machine.
    speed     examples/s of Keras `fit` on random pairs with our classifier, loss and optimizer
              (forward, cross-entropy, backward, global-norm clip 1.0, our AdamW with warmup and
              linear decay) on BERT-base (L12 H768 A12, vocab 30522), seq 128: float32 batch 32,
              mixed bfloat16 batch 32 and 128, each with three attentions: "einsum" (google-
              research/bert's, attention-probs dropout 0.1), "einsum" with that dropout at 0, and
              "fused" (keras.ops.dot_product_attention: cuDNN flash attention where the GPU and
              dtype allow, i.e. bfloat16, XLA's attention in float32; it has no attention-probs
              dropout, so it runs at 0). Timed steps after warm-up steps (tracing, compiling),
              one fit call each.
    finetune  run_classifier's recipe (TrainConfig's defaults: lr 2e-5, 3 epochs, batch 32,
              warmup 0.1, each batch cut to its longest pair) through bert_core.trainer.fine_tune
              on the packed train split, the classifier built inside the trainer's scopes from
              the packed MiniLM-L3 (fresh pooler and head), for each seed x precision (float32,
              mixed_bfloat16); dev accuracy and F1 from bert_core.predict.predict_logits. Per
              run: Trained.seconds (compiling included), examples/s over all steps and over the
              steps after the first third (fewer new batch widths compile there), device,
              backend, precision, seed. Then mean +/- sd per precision.
    search    the same fine-tune for each learning rate x epochs x seed, jobs spread over worker
              processes that share the GPU (a setting that leads is then measured on the CPU by
              bench/accuracy.py)
    all       the GPU check: speed, then finetune, into --out-dir (speed.json, finetune.jsonl).
              --quick (2 warm-up + 10 timed speed steps; seed 1 only) is sized for a 15-minute
              lease with its start-up: 9 BERT-base compiles of ~20 s (the committed warm-ups
              took 17-19 s) and 2 fine-tunes; not yet timed on a GPU
    report    here: gpu.md and gpu.json (in --results, bench/results by default) from the files
              a GPU run brought back, and the committed search runs

Every run is written as it ends (finetune and search: one JSON line appended to --out; speed:
the whole JSON object rewritten), so a run stopped by its time limit keeps what it finished.
Under KERAS_BACKEND=jax nothing here needs TensorFlow (run with an `import tensorflow` that
fails, only Keras' own set_random_seed looks for it, and goes on). The GPU image lacked keras,
pydantic and google-crc32c (with namex, optree, pydantic-core, annotated-types and
typing-inspection): install them from wheels there.

    python bench/gpu.py pack [--shared ../shared] [--data .gpu/mrpc_minilm.npz]
    KERAS_BACKEND=jax python bench/gpu.py all --quick --out-dir OUT     (or: speed, finetune)
    KERAS_BACKEND=jax python bench/gpu.py search [--workers 8] [--seeds 1 2 3 4 5] [...]
    python bench/gpu.py report --speed OUT/speed.json --finetune OUT/finetune.jsonl

bench/results/gpu_search.jsonl holds two searches made by this script's own training loop before
it used bert_core's trainer (every batch padded to 128, a reshuffled permutation per epoch): the
default grid with seeds 1-5, then `--learning-rates 2e-5 3e-5 5e-5 8e-5 --epochs 1 1.5 2 3
--seeds 5 6 7 8 9 10` (each stopped by its time limit: 82 and 80 runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # bert_core is imported where a run needs it
    from bert_core.config import BertConfig
    from bert_core.inputs import Split

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
SEQ = 128
LEARNING_RATES = (1e-5, 2e-5, 3e-5, 5e-5, 1e-4)
EPOCHS = (2.0, 3.0, 5.0, 8.0)
SEEDS = (1, 2, 3)
PRECISIONS = ("float32", "mixed_bfloat16")
PREDICT_BATCH = 256
STEADY_AFTER = 1 / 3  # of the steps: the recipe's first epoch


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


@dataclasses.dataclass(frozen=True)
class Packed:
    """What `pack` wrote: MiniLM-L3's config (pruned vocab) and weights, MRPC train and dev."""

    config: BertConfig
    weights: dict[str, np.ndarray]
    train: Split
    dev: Split


def load_packed(path: Path) -> Packed:
    from bert_core.config import BertConfig
    from bert_core.features import FEATURE_NAMES, Features
    from bert_core.inputs import Split

    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}

    def split(name: str) -> Split:
        labels = arrays[f"{name}/labels"]
        return Split(Features(*(arrays[f"{name}/{k}"] for k in FEATURE_NAMES)), labels,
                     [f"{name}-{i}" for i in range(len(labels))])

    weights = {k.removeprefix("weights/"): v for k, v in arrays.items() if k.startswith("weights/")}
    return Packed(BertConfig(**json.loads(str(arrays["config"]))), weights, split("train"),
                  split("dev"))


# --- speed (there) --------------------------------------------------------------------------------

SPEED_RUNS = (("float32", 32), ("mixed_bfloat16", 32), ("mixed_bfloat16", 128))
ATTENTIONS = (("einsum", None), ("einsum", 0.0), ("fused", 0.0))  # (attention, probs dropout)


def device_name() -> str:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return str(jax.devices()[0].device_kind)
    return keras.backend.backend()  # this bench reads the device from JAX only


def speed(out: Path, quick: bool, tiny: bool = False, steps: int | None = None) -> dict:
    import keras

    from bert_core.config import BertConfig

    warmup, timed = (2, 10) if quick else (5, 40)
    timed = steps or timed
    config = BertConfig.tiny() if tiny else BertConfig()
    results = {"device": device_name(), "backend": keras.backend.backend(),
               "config": config.to_dict(), "seq": SEQ, "warmup_steps": warmup,
               "timed_steps": timed, "runs": []}
    for policy, batch in SPEED_RUNS:
        for attention, dropout in ATTENTIONS:
            variant = dataclasses.replace(config, attention_probs_dropout_prob=dropout) \
                if dropout is not None else config
            run = {"policy": policy, "batch": batch, "attention": attention,
                   "attention_dropout": variant.attention_probs_dropout_prob}
            try:
                run.update(speed_run(variant, policy, batch, warmup, timed, attention))
            except Exception as err:  # noqa: BLE001 - one failed variant must not lose the others
                run["error"] = repr(err)[:500]
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
            write_json(out, results)
    return results


def speed_run(config, policy: str, batch: int, warmup: int, steps: int, attention: str) -> dict:
    """`warmup` steps (tracing, compiling), then `steps` timed ones, of fit on random pairs."""
    import keras

    from bert_core.model import BertClassifier
    from bert_core.optimizer import create_optimizer
    from bert_core.trainer import dtype_policy

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    with dtype_policy(policy):
        model = BertClassifier.from_bert_config(config, attention=attention)
        model.compile(optimizer=create_optimizer(2e-5, 10_000, 1_000),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    n = batch * (warmup + steps)
    x = {"input_ids": rng.integers(1000, config.vocab_size, (n, SEQ), dtype=np.int32),
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


# --- finetune and search (there) ------------------------------------------------------------------

def classifier_builder(packed: Packed) -> Callable:
    """What fine_tune calls inside its device and precision scopes: the classifier with the
    packed MiniLM-L3 weights, dropout drawn at 128 whatever a batch's width (as the train task)."""
    from bert_core.checkpoint import PretrainedCheckpoint, load_pretrained
    from bert_core.model import BertClassifier

    def build():
        model = BertClassifier.from_bert_config(packed.config, dropout_length=SEQ)
        load_pretrained(model, PretrainedCheckpoint(packed.config, packed.weights,
                                                    "minilm-l3 (packed)", "huggingface"))
        return model

    return build


def finetune_run(packed: Packed, cfg) -> dict:
    """One fine-tune as `cfg` (a TrainConfig) says through bert_core.trainer, scored on dev."""
    import keras
    from sklearn.metrics import accuracy_score, f1_score

    from bert_core.features import PARAPHRASE
    from bert_core.predict import predict_logits
    from bert_core.trainer import fine_tune, read_history

    keras.backend.clear_session()
    marks: list[tuple[float, float]] = []  # (clock, percent done) at each progress report
    with tempfile.TemporaryDirectory(prefix="gpu-finetune-") as work:
        trained = fine_tune(classifier_builder(packed), packed.train, cfg, Path(work), _log,
                            lambda percent, _: marks.append((time.perf_counter(), percent)),
                            dev=packed.dev)
        history = read_history(Path(work) / "history.jsonl", cfg.batch_size, trained.seconds)
    logits = predict_logits(trained.model, packed.dev.features, PREDICT_BATCH)
    predictions, labels = logits.argmax(axis=-1), packed.dev.labels
    return {"device": device_name(), "backend": keras.backend.backend(),
            "precision": cfg.precision, "seed": cfg.seed, "learning_rate": cfg.learning_rate,
            "epochs": cfg.epochs, "batch_size": cfg.batch_size,
            "warmup_proportion": cfg.warmup_proportion, "steps": trained.steps,
            "train_s": round(trained.seconds, 2),
            "examples_per_second": trained.steps * cfg.batch_size / trained.seconds,
            "steady_examples_per_second": rate_after(marks, trained.steps, cfg.batch_size),
            "accuracy": float(accuracy_score(labels, predictions)),
            "f1": float(f1_score(labels, predictions, pos_label=PARAPHRASE, zero_division=0)),
            "positive_share": float(np.mean(predictions == PARAPHRASE)),
            "final_loss": history["loss"][-1]}


def _log(line: str) -> None:
    if not line.startswith("step "):  # the trainer's set-up line; progress ends in the record
        print(f"  {line}", flush=True)


def rate_after(marks: list[tuple[float, float]], steps: int, batch: int,
               fraction: float = STEADY_AFTER) -> float | None:
    """Examples/s between the first progress report past `fraction` of the steps and the last
    one (None with fewer than two such reports).

    >>> rate_after([(0.0, 10.0), (5.0, 50.0), (7.0, 100.0)], 100, 32)
    800.0
    """
    late = [(clock, percent * steps / 100) for clock, percent in marks if percent > 100 * fraction]
    if len(late) < 2:
        return None
    (t0, s0), (t1, s1) = late[0], late[-1]
    return (s1 - s0) * batch / (t1 - t0)


def finetune(data: Path, out: Path, seeds, precisions, epochs: float | None = None) -> list[dict]:
    """run_classifier's recipe (but for `epochs`) for each seed x precision."""
    from bert_core.train_config import TrainConfig

    packed, runs = load_packed(data), []
    for seed in seeds:  # every precision's first seed before any second one
        for precision in precisions:
            cfg = TrainConfig(seed=seed, precision=precision,
                              **({"epochs": epochs} if epochs else {}))
            try:
                run = finetune_run(packed, cfg)
            except Exception as err:  # noqa: BLE001 - one failed run must not lose the others
                run = {"precision": precision, "seed": seed, "error": repr(err)[:500]}
            append_line(out, run)
            runs.append(run)
    print(markdown_table(summarize(runs, FINETUNE_BY), FINETUNE_COLUMNS))
    return runs


_PACKED, _DEADLINE = None, math.inf


def _worker_init(path: str, deadline: float) -> None:
    global _PACKED, _DEADLINE
    _PACKED, _DEADLINE = load_packed(Path(path)), deadline


def _job(args: tuple) -> dict | None:
    from bert_core.train_config import TrainConfig

    if time.time() > _DEADLINE:  # the pool queues every job at once: the budget is checked here
        return None
    setting = dict(zip(("learning_rate", "epochs", "seed", "batch_size"), args))
    try:
        return finetune_run(_PACKED, TrainConfig(**setting))
    except Exception as err:  # noqa: BLE001 - reported with its job; the search goes on
        return {**setting, "error": repr(err)[:500]}


def search(data: Path, out: Path, workers: int, seeds: list[int], learning_rates, epochs,
           budget_s: float | None = None, batch: int = 32) -> dict:
    jobs = [(lr, ep, seed, batch) for seed in seeds for ep in sorted(epochs, reverse=True)
            for lr in learning_rates]  # every setting's first seed before any second one
    # Each worker is a JAX process on the one GPU: memory grows as needed instead of 75% each.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    runs, start = [], time.perf_counter()
    deadline = time.time() + (budget_s if budget_s is not None else math.inf)
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, _worker_init, (str(data), deadline)) as pool:
        for run in pool.imap_unordered(_job, jobs):
            if run is None:
                continue
            run["elapsed_s"] = round(time.perf_counter() - start, 1)
            append_line(out, run)
            runs.append(run)
    if len(runs) < len(jobs):
        print(f"budget of {budget_s:g} s spent: {len(runs)} of {len(jobs)} runs done", flush=True)
    return {"runs": len(runs), "wall_s": round(time.perf_counter() - start, 1),
            "settings": search_rows(runs)}


def append_line(path: Path, record: dict) -> None:
    """One JSON line appended (and printed) as soon as a run ends."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(path)


# --- summaries ------------------------------------------------------------------------------------

def summarize(runs: list[dict], by: tuple[str, ...],
              metrics: tuple[str, ...] = ("accuracy", "f1", "train_s", "examples_per_second",
                                          "steady_examples_per_second")) -> list[dict]:
    """Per distinct value of the `by` fields, in order of first appearance: how many runs
    (`seeds`) and each metric's mean and sd over them (None where no run has it)."""
    groups: dict[tuple, list[dict]] = {}
    for run in (r for r in runs if "error" not in r):
        groups.setdefault(tuple(run[k] for k in by), []).append(run)
    rows = []
    for key, group in groups.items():
        row = {**dict(zip(by, key)), "seeds": len(group)}
        for metric in metrics:
            values = [r[metric] for r in group if r.get(metric) is not None]
            row[metric] = statistics.fmean(values) if values else None
            row[f"{metric}_sd"] = _sd(values) if values else None
        rows.append(row)
    return rows


def search_rows(runs: list[dict]) -> list[dict]:
    """Per (learning rate, epochs, batch): dev accuracy and F1 over seeds, best first."""
    rows = summarize(runs, ("learning_rate", "epochs", "batch_size"), ("accuracy", "f1"))
    return sorted(rows, key=lambda r: -r["accuracy"])


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _mean_sd(metric: str, digits: int) -> Callable[[dict], str]:
    def cell(row: dict) -> str:
        if row.get(metric) is None:
            return ""
        return f"{row[metric]:.{digits}f} +/- {row[f'{metric}_sd']:.{digits}f}"
    return cell


def markdown_table(rows: list[dict], columns: list[tuple[str, Callable[[dict], str]]],
                   left: int = 1) -> str:
    """`columns`: (header, cell of a row); the first `left` left-aligned, the others right."""
    lines = ["| " + " | ".join(header for header, _ in columns) + " |",
             "|" + "---|" * left + "---:|" * (len(columns) - left)]
    lines += ["| " + " | ".join(cell(row) for _, cell in columns) + " |" for row in rows]
    return "\n".join(lines)


FINETUNE_BY = ("precision", "epochs")
FINETUNE_COLUMNS = [("precision", lambda r: r["precision"]),
                    ("epochs", lambda r: f"{r['epochs']:g}"), ("seeds", lambda r: str(r["seeds"])),
                    ("dev accuracy", _mean_sd("accuracy", 4)), ("dev F1", _mean_sd("f1", 4)),
                    ("fine-tune s", _mean_sd("train_s", 1)),
                    ("examples/s, all steps", _mean_sd("examples_per_second", 0)),
                    ("examples/s, after the first third", _mean_sd("steady_examples_per_second",
                                                                   0))]
SEARCH_COLUMNS = [("lr", lambda r: f"{r['learning_rate']:g}"),
                  ("epochs", lambda r: f"{r['epochs']:g}"),
                  ("batch", lambda r: str(r["batch_size"])), ("seeds", lambda r: str(r["seeds"])),
                  ("dev accuracy", _mean_sd("accuracy", 4)), ("dev F1", _mean_sd("f1", 4))]


# --- report (here) -------------------------------------------------------------------------------

def flops_per_token(config: dict, seq: int) -> float:
    """Training FLOPs per token: 6 x the non-embedding weights (forward 2, backward 4) plus the
    attention products (QK^T and AV, 2 x 2 x seq x hidden per layer forward), also x 3."""
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    inter = config["intermediate_size"]
    weights = layers * (4 * h * h + 2 * h * inter)
    return 6 * weights + 3 * layers * 4 * seq * h


def speed_section(figures: dict) -> list[str]:
    """The speed table; runs from before the attention option count as einsum at the config's
    attention-probs dropout."""
    per_token, seq = flops_per_token(figures["config"], figures["seq"]), figures["seq"]
    runs = [{"attention": "einsum",
             "attention_dropout": figures["config"]["attention_probs_dropout_prob"], **r}
            for r in figures["runs"]]
    anchor = next((r for r in runs if "error" not in r), None)

    def done(cell: Callable[[dict], str]) -> Callable[[dict], str]:
        return lambda r: "" if "error" in r else cell(r)

    columns = [("policy", lambda r: r["policy"]), ("batch", lambda r: str(r["batch"])),
               ("attention", lambda r: r["attention"]),
               ("attention dropout", lambda r: f"{r['attention_dropout']:g}"),
               ("examples/s", lambda r: f"failed: {r['error'][:80]}" if "error" in r
                else f"{r['examples_per_second']:.0f}"),
               ("step ms", done(lambda r: f"{r['step_ms']:.1f}")),
               (f"/ {anchor['policy']} batch {anchor['batch']}" if anchor else "ratio",
                done(lambda r: f"{r['examples_per_second'] / anchor['examples_per_second']:.2f}x")),
               ("model TFLOP/s", done(lambda r: _figure(r["examples_per_second"] * seq
                                                        * per_token / 1e12)))]
    c = figures["config"]
    title = (f"## Training step, L{c['num_hidden_layers']} H{c['hidden_size']} "
             f"A{c['num_attention_heads']}, seq {seq}, our AdamW "
             f"({figures['timed_steps']} timed steps after {figures['warmup_steps']})")
    return [title, "", markdown_table(runs, columns)]


def _figure(value: float) -> str:
    """
    >>> _figure(118.4), _figure(0.0123)
    ('118', '0.012')
    """
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def search_section(rows: list[dict]) -> list[str]:
    cell = {(r["learning_rate"], r["epochs"]): r for r in rows if r["batch_size"] == 32}
    lrs, epochs = sorted({lr for lr, _ in cell}), sorted({e for _, e in cell})
    lines = ["## MRPC fine-tune of MiniLM-L3, batch 32: dev accuracy, mean over seeds (seeds)",
             "", "| lr \\ epochs | " + " | ".join(f"{e:g}" for e in epochs) + " |",
             "|---:|" + "---:|" * len(epochs)]
    for lr in lrs:
        lines.append(f"| {lr:g} | " + " | ".join(
            f"{cell[lr, e]['accuracy']:.4f} ({cell[lr, e]['seeds']})" if (lr, e) in cell else ""
            for e in epochs) + " |")
    return lines + ["", "Best first:", "", markdown_table(rows, SEARCH_COLUMNS, left=0)]


def read_lines(files: list[Path]) -> list[dict]:
    runs = [json.loads(line) for f in files for line in f.read_text().splitlines() if line]
    return [r for r in runs if "error" not in r]


def report(speed_file: Path | None, finetune_files: list[Path], search_files: list[Path],
           out: Path) -> dict:
    figures: dict = {"speed": None, "finetune": None, "search": [], "runs": 0}
    sections: list[list[str]] = []
    if speed_file:
        figures["speed"] = json.loads(speed_file.read_text().strip().splitlines()[-1])
        figures["flops_per_token"] = flops_per_token(figures["speed"]["config"],
                                                     figures["speed"]["seq"])
        sections.append(speed_section(figures["speed"]))
    if finetune_files:
        runs = read_lines(finetune_files)
        rows = summarize(runs, FINETUNE_BY)
        figures["finetune"] = {"runs": runs, "by_precision": rows}
        title = ("## MRPC fine-tune of MiniLM-L3 through bert_core.trainer, TrainConfig's "
                 "defaults (run_classifier's recipe) but the epochs shown: mean +/- sd over seeds")
        sections.append([title, "", markdown_table(rows, FINETUNE_COLUMNS)])
    if search_files:
        runs = read_lines(search_files)
        figures["search"], figures["runs"] = search_rows(runs), len(runs)
        sections.append(search_section(figures["search"]))
    first = figures["speed"] or next(iter((figures["finetune"] or {}).get("runs", [])), {})
    lines = [f"# bench/gpu.py on one {first.get('device', '?')}, Keras on {first.get('backend')}"]
    for section in sections:
        lines += [""] + section
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.md").write_text("\n".join(lines) + "\n")
    (out / "gpu.json").write_text(json.dumps(figures, indent=1) + "\n")
    return figures


# --- the command line -----------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = top.add_subparsers(dest="mode", required=True)
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data", type=Path, default=ROOT / ".gpu" / "mrpc_minilm.npz")
    p = modes.add_parser("pack", parents=[data])
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    timing = argparse.ArgumentParser(add_help=False)
    timing.add_argument("--quick", action="store_true",
                        help="speed: 2 warm-up + 10 timed steps; finetune: seed 1 only")
    timing.add_argument("--tiny", action="store_true", help="speed: BERT-Tiny (a smoke test)")
    timing.add_argument("--steps", type=int, help="speed: timed steps")
    timing.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    timing.add_argument("--precisions", nargs="+", default=list(PRECISIONS))
    timing.add_argument("--epochs", type=float, help="finetune: instead of the recipe's 3")
    p = modes.add_parser("speed", parents=[timing])
    p.add_argument("--out", type=Path, default=Path("gpu_speed.json"))
    p = modes.add_parser("finetune", parents=[data, timing])
    p.add_argument("--out", type=Path, default=Path("gpu_finetune.jsonl"))
    p = modes.add_parser("all", parents=[data, timing])
    p.add_argument("--out-dir", type=Path, default=Path("gpu_check"))
    p = modes.add_parser("search", parents=[data])
    p.add_argument("--out", type=Path, default=Path("gpu_search.jsonl"))
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--learning-rates", type=float, nargs="+", default=list(LEARNING_RATES))
    p.add_argument("--epochs", type=float, nargs="+", default=list(EPOCHS))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--budget-s", type=float, help="start no run after this many seconds")
    p.add_argument("--quick", action="store_true", help="the recipe, one seed, 0.1 epoch")
    p = modes.add_parser("report")
    p.add_argument("--speed", type=Path, help="speed's JSON (its last line)")
    p.add_argument("--finetune", type=Path, nargs="*", default=[], help="finetune's JSON lines")
    p.add_argument("--runs", type=Path, nargs="*", default=[RESULTS / "gpu_search.jsonl"],
                   help="search runs (JSON lines); default: the committed ones")
    p.add_argument("--results", type=Path, default=RESULTS, help="where gpu.md/gpu.json go")
    return top


def main() -> None:
    opts = parser().parse_args()
    if opts.mode == "pack":
        return pack(opts.shared, opts.data)
    if opts.mode == "report":
        figures = report(opts.speed, opts.finetune, opts.runs, opts.results)
        print(f"{opts.results / 'gpu.md'}: speed {'yes' if figures['speed'] else 'no'}, "
              f"{len((figures['finetune'] or {}).get('runs', []))} fine-tunes, "
              f"{figures['runs']} search runs")
        return
    if opts.mode == "search":
        if opts.quick:
            opts.seeds, opts.learning_rates, opts.epochs = opts.seeds[:1], [2e-5], [0.1]
        figures = search(opts.data, opts.out, opts.workers, opts.seeds, opts.learning_rates,
                         opts.epochs, opts.budget_s, opts.batch_size)
        print(markdown_table(figures["settings"], SEARCH_COLUMNS, left=0))
        print(json.dumps(figures))
        return
    seeds = opts.seeds[:1] if opts.quick else opts.seeds
    if opts.mode == "all":
        opts.out_dir.mkdir(parents=True, exist_ok=True)
    if opts.mode in ("speed", "all"):
        speed(opts.out if opts.mode == "speed" else opts.out_dir / "speed.json", opts.quick,
              opts.tiny, opts.steps)
    if opts.mode in ("finetune", "all"):
        out = opts.out if opts.mode == "finetune" else opts.out_dir / "finetune.jsonl"
        finetune(opts.data, out, seeds, opts.precisions, opts.epochs)


if __name__ == "__main__":
    main()
