"""One figure of every benchmark's ratios against its anchor and target, from bench/results/*.json
(written by bench/train.py, tokenize.py, pipeline.py and accuracy.py): bench/results/summary.png.

    python bench/plot.py [--results bench/results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


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


def accuracy_panel(ax, acc: dict) -> None:
    width, x = 0.2, 0
    ticks, names = [], []
    for setting, row in acc["summary"].items():
        for j, (impl, metric) in enumerate([(i, m) for m in ("accuracy", "f1")
                                            for i in ("ours", "hf")]):
            mean, sd = row[f"{impl}_{metric}"]
            ax.bar(x + j * width, mean, width, yerr=sd, capsize=3,
                   color={"ours": "tab:blue", "hf": "tab:orange"}[impl],
                   alpha=1.0 if metric == "accuracy" else 0.55,
                   label=f"{impl} {metric}" if x == 0 else None)
        ticks.append(x + 1.5 * width)
        names.append(f"{setting}\nlr {row['learning_rate']:g}, {row['epochs']:g} ep")
        x += 1
    ax.axhline(0.6838, color="black", linestyle=":", linewidth=1, label="majority baseline")
    ax.set_ylim(0.6, 0.9)
    ax.set_xticks(ticks, names, fontsize=8)
    ax.set_title("MRPC dev accuracy / F1 (mean +/- sd, 3 seeds)", fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="upper left")


def time_panel(ax, acc: dict | None, pipeline: dict | None) -> None:
    labels, values, targets = [], [], []
    if acc and "recipe" in acc["summary"]:
        labels.append("MRPC fine-tune, train stage\nours bucketed / HF padded")
        values.append(acc["summary"]["recipe"]["train_ratio"])
        targets.append(0.4)
    if pipeline:
        labels += ["warm / cold\nwhole command", "Prefect overhead\n/ cold flow"]
        values += [pipeline["warm_over_cold_command"], pipeline["prefect_overhead_share_cold"]]
        targets += [0.1, 0.05]
    if values:
        bars(ax, labels, values, targets, "Wall time ratios", better_below=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    opts = parser.parse_args()
    train, tok = load(opts.results, "train"), load(opts.results, "tokenize")
    acc, pipeline = load(opts.results, "accuracy"), load(opts.results, "pipeline")
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    if train:
        train_panel(axes[0, 0], train)
    if tok:
        tokenize_panel(axes[0, 1], tok)
    if acc:
        accuracy_panel(axes[1, 0], acc)
    time_panel(axes[1, 1], acc, pipeline)
    fig.suptitle("bertflow benchmarks on a 2-core CPU, each against an anchor measured in the "
                 "same run", fontsize=11)
    fig.tight_layout()
    out = opts.results / "summary.png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
