"""What bench/accuracy.py records about the machine, and what it makes of its runs: per variant
mean +/- sd over the seeds, the three target ratios (from the means of the same invocation), and
the markdown report."""

from __future__ import annotations

import importlib.metadata
import os
import statistics
from pathlib import Path

# (name, figure, variant, anchor, target, accuracy rule): ratio = variant mean / anchor mean <=
# target, at a mean dev accuracy equal or better than the anchor's ("at_least") or within one
# standard deviation of the anchor's seeds ("within_sd": a precision against float32)
TARGETS = (("default train / HF longest train", "train_s", "default", "longest", 1.0, "at_least"),
           ("fastest train / HF group_by_length train", "train_s", "fastest", "group_by_length",
            0.6, "at_least"),
           ("default command / HF max_length command", "command_s", "default", "max_length", 0.8,
            "at_least"),
           ("bf16 train / our float32 train", "train_s", "bf16", "default", 0.5, "within_sd"),
           ("bf16 train / HF bf16 longest train", "train_s", "bf16", "longest_bf16", 1.0,
            "at_least"))
FIGURES = ("accuracy", "f1", "train_s", "command_s", "command_cpu_s", "peak_rss_mb")
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
LIBRARIES = ("tensorflow", "keras", "torch", "transformers", "numpy")


def cpu(cpuinfo: str) -> dict:
    """The CPU model, the cores this process may use, and which of SPEED_FLAGS it has.

    >>> cpu("model name\\t: AMD EPYC\\nflags\\t\\t: fpu avx2 avx512f\\n")["flags"]
    ['avx2', 'avx512f']
    """
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name", "unknown"),
            "cores": len(os.sched_getaffinity(0)),
            "flags": [flag for flag in SPEED_FLAGS if flag in flags]}


def versions() -> dict:
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {name: version(name) for name in LIBRARIES}


def machine() -> dict:
    info = Path("/proc/cpuinfo")
    return {"cpu": cpu(info.read_text() if info.is_file() else ""), "versions": versions()}


def mean_sd(values: list[float]) -> list[float]:
    return [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def target(name, figure, ours, anchor, limit, rule, variants: dict) -> dict:
    ratio = variants[ours][figure][0] / variants[anchor][figure][0]
    accuracy = [variants[ours]["accuracy"][0], variants[anchor]["accuracy"][0]]
    time_met = ratio <= limit
    accuracy_met = accuracy[0] >= accuracy[1] if rule == "at_least" else \
        abs(accuracy[0] - accuracy[1]) <= variants[anchor]["accuracy"][1]
    return {"name": name, "figure": figure, "variant": ours, "anchor": anchor, "ratio": ratio,
            "target": limit, "accuracy": accuracy, "time_met": time_met,
            "accuracy_met": accuracy_met, "met": time_met and accuracy_met}


def summarize(runs: list[dict], settings: dict) -> dict:
    """Per setting: its values, its seeds, per variant mean and sd of FIGURES (and how many
    runs collapsed), and each target whose two variants ran."""
    out = {}
    for name, values in settings.items():
        rows = [r for r in runs if r["setting"] == name]
        if not rows:
            continue
        variants = {}
        for variant in dict.fromkeys(r["variant"] for r in rows):
            group = [r for r in rows if r["variant"] == variant]
            variants[variant] = {"impl": group[0]["impl"], "runs": len(group),
                                 "collapsed": sum(r["collapsed"] for r in group),
                                 **{f: mean_sd([r[f] for r in group]) for f in FIGURES}}
        out[name] = {"settings": values, "seeds": sorted({r["seed"] for r in rows}),
                     "variants": variants,
                     "targets": [target(*t, variants) for t in TARGETS
                                 if t[2] in variants and t[3] in variants]}
    return out


def pm(pair: list[float], digits: int) -> str:
    return f"{pair[0]:.{digits}f} +/- {pair[1]:.{digits}f}"


def describe(values: dict) -> str:
    return (f"lr {values['learning_rate']:g}, {values['epochs']:g} ep, batch "
            f"{values['batch_size']}, warmup {values['warmup_proportion']:g}, seq 128")


def run_table(runs: list[dict]) -> list[str]:
    lines = ["| setting | variant | impl | seed | dev accuracy | dev F1 | collapsed | train s | "
             "command s | command CPU s | peak RSS MB |", "|---|---|---|---:|---:|---:|---|"
             + "---:|" * 4]
    lines += [f"| {r['setting']} | {r['variant']} | {r['impl']} | {r['seed']} | "
              f"{r['accuracy']:.4f} | {r['f1']:.4f} | {'yes' if r['collapsed'] else 'no'} | "
              f"{r['train_s']:.1f} | {r['command_s']:.1f} | {r['command_cpu_s']:.1f} | "
              f"{r['peak_rss_mb']} |" for r in runs]
    return lines


def summary_table(name: str, row: dict) -> list[str]:
    lines = [f"{name}: {describe(row['settings'])}; seeds {row['seeds']}", "",
             "| variant | impl | dev accuracy | dev F1 | collapsed | train s | command s | "
             "command CPU s | peak RSS MB |", "|---|---|---:|---:|---:|" + "---:|" * 4]
    for variant, v in row["variants"].items():
        lines.append(f"| {variant} | {v['impl']} | {pm(v['accuracy'], 4)} | {pm(v['f1'], 4)} | "
                     f"{v['collapsed']}/{v['runs']} | {pm(v['train_s'], 1)} | "
                     f"{pm(v['command_s'], 1)} | {pm(v['command_cpu_s'], 1)} | "
                     f"{v['peak_rss_mb'][0]:.0f} |")
    lines += ["", "| target | ratio | limit | dev accuracy, ours vs anchor | result |",
              "|---|---:|---:|---|---|"]
    for t in row["targets"]:
        why = "" if t["met"] else " (" + ", ".join(
            w for w, ok in (("time", t["time_met"]), ("accuracy", t["accuracy_met"]))
            if not ok) + ")"
        lines.append(f"| {t['name']} | {t['ratio']:.3f} | <= {t['target']:g} | "
                     f"{t['accuracy'][0]:.4f} vs {t['accuracy'][1]:.4f} | "
                     f"{'met' if t['met'] else 'missed' + why} |")
    return lines + [""]


def report(runs: list[dict], summary: dict, here: dict) -> str:
    """The markdown: every run, then per setting the summary and its targets, then the
    machine and the commit."""
    lines = run_table(runs) + [""]
    for name, row in summary.items():
        lines += summary_table(name, row)
    cpu_info = here["cpu"]
    lines.append(f"CPU: {cpu_info['model']}, {cpu_info['cores']} cores, "
                 f"{' '.join(cpu_info['flags']) or 'none of ' + ' '.join(SPEED_FLAGS)}; commit "
                 f"{here['commit']}; " + ", ".join(f"{k} {v}" for k, v in here["versions"].items()))
    return "\n".join(lines) + "\n"
