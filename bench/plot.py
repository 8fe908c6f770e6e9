"""One figure of every benchmark's ratios against its anchor and target, from bench/results/*.json
(written by bench/train.py, tokenize.py, pipeline.py, accuracy.py and gpu.py):
bench/results/summary.png.

    python bench/plot.py [--results bench/results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from accuracy import SETTINGS  # bench/ is this script's first sys.path entry

RESULTS = Path(__file__).resolve().parent / "results"
MAJORITY = 279 / 408  # MRPC dev: the accuracy of calling every pair a paraphrase


def load(results: Path, name: str) -> dict | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def bars(ax, labels: list[str], values: list[float], targets: list[float], title: str,
         better_below: bool = False) -> None:
    """One bar per ratio, green where it meets its target (a dashed mark over the bar), red
    where it misses."""
    met = [v <= t if better_below else v >= t for v, t in zip(values, targets)]
    ax.bar(range(len(values)), values, color=["tab:green" if m else "tab:red" for m in met])
    for i, (v, t) in enumerate(zip(values, targets)):
        ax.annotate(f"{v:.2f}", (i, v), ha="center", va="bottom", fontsize=8)
        ax.hlines(t, i - 0.45, i + 0.45, colors="black", linestyles="--", linewidth=1,
                  label="target" if i == 0 else None)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_xticks(range(len(values)), labels, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(f"ratio ({'lower' if better_below else 'higher'} is better)", fontsize=9)


def train_panel(ax, train: dict) -> None:
    results, labels, values = train["results"], [], []
    for config in ("tiny", "minilm"):
        anchor = results[f"{config}/hf/padded"]["examples_per_second"]
        for run in ("padded", "bucketed"):
            labels.append(f"{config} {run}")
            values.append(results[f"{config}/keras/{run}"]["examples_per_second"] / anchor)
    bars(ax, labels, values, [1.0] * len(values),
         "Training examples/s, ours / HF PyTorch padded to 128")


def tokenize_panel(ax, tok: dict) -> None:
    bars(ax, ["/ tokenizers encode_batch", "/ pure-Python FullTokenizer"],
         [tok["ratio_vs_tokenizers"], tok["ratio_vs_plain_python"]], [1.0, 3.0],
         "Tokenize stage pairs/s (both shard formats written), ours / anchor")


def recipe_row(acc: dict | None) -> dict | None:
    """The recipe's summary in accuracy.json (per variant mean +/- sd, the target ratios), or
    None when it has none (a file from before variants were recorded has no "variants")."""
    row = (acc or {}).get("summary", {}).get("recipe")
    return row if row and "variants" in row else None


def accuracy_panel(ax, row: dict) -> None:
    """Dev accuracy and F1 of every variant, mean +/- sd over the seeds."""
    names, seen = list(row["variants"]), set()
    for i, name in enumerate(names):
        variant = row["variants"][name]
        for j, metric in enumerate(("accuracy", "f1")):
            label = f"{variant['impl']} {metric}"
            mean, sd = variant[metric]
            ax.bar(i + (j - 0.5) * 0.4, mean, 0.4, yerr=sd, capsize=3,
                   color={"ours": "tab:blue", "hf": "tab:orange"}[variant["impl"]],
                   alpha=1.0 if metric == "accuracy" else 0.55,
                   label=None if label in seen else label)
            seen.add(label)
    ax.axhline(MAJORITY, color="black", linestyle=":", linewidth=1, label="majority baseline")
    ax.set_ylim(0.6, 0.9)
    ax.set_xticks(range(len(names)), [f"{row['variants'][n]['impl']} {n}" for n in names],
                  fontsize=8)
    ax.set_title(f"MRPC dev accuracy / F1, recipe (mean +/- sd, {len(row['seeds'])} seeds)",
                 fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="upper left")


def time_panel(ax, row: dict | None, pipeline: dict | None) -> None:
    labels, values, targets = [], [], []
    for t in (row or {}).get("targets", []):
        labels.append(f"{t['figure'].removesuffix('_s')}: ours\n{t['variant']} / HF\n"
                      f"{t['anchor']}")
        values.append(t["ratio"])
        targets.append(t["target"])
    if pipeline:
        labels += ["warm / cold\nwhole command", "Prefect overhead\n/ cold flow"]
        values += [pipeline["warm_over_cold_command"], pipeline["prefect_overhead_share_cold"]]
        targets += [0.1, 0.05]
    if values:
        bars(ax, labels, values, targets, "Wall time ratios", better_below=True)


def gpu_search_panel(ax, gpu: dict) -> None:
    """Dev accuracy against epochs, one line per learning rate, from bench/gpu.py's search."""
    rows = [r for r in gpu["search"] if r.get("batch_size", 32) == 32]
    for lr in sorted({r["learning_rate"] for r in rows}):
        line = sorted((r["epochs"], r["accuracy"], r["accuracy_sd"] / r["seeds"] ** 0.5)
                      for r in rows if r["learning_rate"] == lr)
        epochs, mean, sem = zip(*line)
        ax.errorbar(epochs, mean, yerr=sem, marker="o", markersize=3, capsize=2, linewidth=1,
                    label=f"lr {lr:g}")
    lr, epochs = SETTINGS["recipe"]["learning_rate"], SETTINGS["recipe"]["epochs"]
    recipe = next(r for r in rows if (r["learning_rate"], r["epochs"]) == (lr, epochs))
    ax.plot([epochs], [recipe["accuracy"]], marker="*", markersize=14, color="black", linestyle="",
            label="run_classifier's recipe")
    ax.axhline(MAJORITY, color="black", linestyle=":", linewidth=1, label="majority baseline")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks([1, 1.5, 2, 3, 5, 8], ["1", "1.5", "2", "3", "5", "8"], fontsize=8)
    ax.set_xlabel("epochs", fontsize=9)
    ax.set_ylabel("dev accuracy (mean +/- s.e., 4-9 seeds)", fontsize=9)
    ax.set_title(f"MiniLM-L3 on MRPC, learning rate x epochs ({gpu['runs']} runs, "
                 f"{gpu['speed']['device']}, JAX)", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="lower left")


def gpu_speed_panel(ax, gpu: dict) -> None:
    runs = [r for r in gpu["speed"]["runs"] if "error" not in r]
    labels = [f"{r['policy'].replace('mixed_', '')}\nbatch {r['batch']}" for r in runs]
    values = [r["examples_per_second"] for r in runs]
    ax.bar(range(len(values)), values, color="tab:purple")
    for i, v in enumerate(values):
        ax.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(values)), labels, fontsize=8)
    ax.set_ylabel("training examples/s", fontsize=9)
    ax.set_title(f"BERT-base training step, seq 128, one {gpu['speed']['device']} "
                 f"(Keras on JAX)", fontsize=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    opts = parser.parse_args()
    train, tok = load(opts.results, "train"), load(opts.results, "tokenize")
    acc, pipeline = load(opts.results, "accuracy"), load(opts.results, "pipeline")
    gpu = load(opts.results, "gpu")
    fig, axes = plt.subplots(2, 3, figsize=(18, 8.5))
    if train:
        train_panel(axes[0, 0], train)
    if tok:
        tokenize_panel(axes[0, 1], tok)
    recipe = recipe_row(acc)
    if recipe:
        accuracy_panel(axes[1, 0], recipe)
    time_panel(axes[1, 1], recipe, pipeline)
    if gpu:
        gpu_search_panel(axes[0, 2], gpu)
        gpu_speed_panel(axes[1, 2], gpu)
    fig.suptitle("bertflow benchmarks on a 2-core CPU, each against an anchor measured in the "
                 "same run; right: on a lent GPU", fontsize=11)
    fig.tight_layout()
    out = opts.results / "summary.png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
