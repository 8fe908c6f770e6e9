"""CoLA, SST-2, RTE and STS-B fine-tuned from the real MiniLM-L3, ours against Hugging Face
transformers on PyTorch with the same weights and recipe: per seed, per task, `bertflow run` then
bench/hf_tasks.py, each a process of its own, so drift of the machine hits both sides alike.

    ours  `bertflow run --json --task T --source ../shared/data/glue/<T> --checkpoint <MiniLM-L3
          zip> --seed S --epochs E`, cold in a fresh --home (validate, tokenize, train, evaluate
          dev, predict test, register); train.padding is the default "dynamic"
    HF    bench/hf_tasks.py: hf_run_glue.py's `--padding longest` loop on the task's TSVs, the
          same step count int(n / 32 * E), BertForSequenceClassification (2 classes; STS-B one
          output with MSE)

Recipe: lr 2e-5, batch 32, max_seq_length 128, warmup 0.1, 3 epochs; SST-2 (67,349 sentences)
1 epoch on both sides (2,104 steps), to keep the run near an hour. `train_s` as bench/accuracy.py
has it: ours the `train` task's seconds from the --json summary, HF model load + loop + save.
Target, per task over the seeds: ours' mean dev metric >= HF's (CoLA mcc, SST-2 and RTE
accuracy, STS-B Pearson and Spearman) at a mean train_s <= HF's.

Each finished run is appended at once to tasks.jsonl in --out with the commit, the CPU (model,
cores, flags) and the library versions; a rerun skips the runs already there for the same
commit, bench code, CPU and epochs (--fresh starts a new file). Writes tasks.{md,json}; the last
line printed is one JSON object.

    python bench/tasks.py [--tasks cola sst2 rte stsb] [--seeds 1 2 3] [--fresh] [--out DIR]
    python bench/tasks.py --report   # the tables again from the rows logged (runs nothing)
    python bench/tasks.py --quick    # smoke test: seed 1, 5 steps a task, into a temp folder
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

# bench/ is the first sys.path entry
from accuracy import bertflow_commit, load_runs, same_run, timed
from accuracy_report import machine, mean_sd, pm
from hf_tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CHECKPOINT = Path("checkpoints") / "minilm-l3-h384-uncased.zip"
IMPLS = ("ours", "hf")
EPOCHS = {"cola": 3.0, "sst2": 1.0, "rte": 3.0, "stsb": 3.0}
QUICK_EPOCHS = {"cola": 0.02, "sst2": 0.0025, "rte": 0.07, "stsb": 0.03}  # 5 steps each
METRICS = {"cola": ("mcc",), "sst2": ("accuracy",), "rte": ("accuracy",),
           "stsb": ("pearson", "spearman")}
KEPT = ("accuracy", "mcc", "pearson", "spearman", "mse")  # of each run's dev metrics (not F1: HF's
# is of class 1, ours of the positive class, which differ for RTE)
# BERT-Tiny (2 layers, hidden 128), GLUE test set, Turc et al. 2019 (Well-Read Students Learn
# Better), table 9: orientation only (another model, the test set, their tuned settings)
BERT_TINY = {"cola": {"mcc": 0.0}, "sst2": {"accuracy": 0.832}, "rte": {"accuracy": 0.572},
             "stsb": {"pearson": 0.743, "spearman": 0.736}}
BENCH_CODE = ("bench/tasks.py", "bench/hf_tasks.py")


def bench_code() -> str:
    """A hash of the bench's own files as they are now: rows measured by another version of this
    bench are not reused (bertflow_commit covers the pipeline's code)."""
    digest = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in BENCH_CODE))
    return digest.hexdigest()[:8]


def kept(metrics: dict) -> dict:
    return {k: metrics[k] for k in KEPT if k in metrics}


def run_ours(task: str, epochs: float, seed: int, shared: Path, scratch: Path) -> dict:
    """A cold `bertflow run --json --task` (a fresh --home, removed afterwards)."""
    home = Path(tempfile.mkdtemp(prefix="home-", dir=scratch))
    cmd = [str(Path(sys.executable).with_name("bertflow")), "run", "--json", "--home", str(home),
           "--task", task, "--source", str(shared / "data" / "glue" / TASKS[task]["folder"]),
           "--checkpoint", str(shared / CHECKPOINT), "--seed", str(seed), "--epochs", str(epochs)]
    try:
        stdout, usage = timed(cmd)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    summary = json.loads(stdout.strip().splitlines()[-1])
    train = summary["tasks"]["train"]
    if train["state"] != "Completed":  # a cached model times nothing
        sys.exit(f"{task}: train was {train['state']} in a fresh --home")
    return {"metrics": kept(summary["dev_metrics"]), "train_s": train["seconds"],
            "collapsed": "collapsed" in summary["model"]["decision"], **usage,
            "stages": {name: t["seconds"] for name, t in summary["tasks"].items()}}


def run_hf(task: str, epochs: float, seed: int, shared: Path, scratch: Path) -> dict:
    """bench/hf_tasks.py as a command of its own (its model saved into scratch)."""
    out = Path(tempfile.mkdtemp(prefix="hf-", dir=scratch))
    try:
        stdout, usage = timed([sys.executable, str(ROOT / "bench" / "hf_tasks.py"), "--task", task,
                               "--shared", str(shared), "--seed", str(seed), "--epochs",
                               str(epochs), "--out", str(out)])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"metrics": kept(result["metrics"]), "train_s": result["train_s"],
            "collapsed": result["metrics"]["collapsed"], "steps": result["steps"], **usage,
            "stages": result["stages"]}


RUNNERS = {"ours": run_ours, "hf": run_hf}


def plan(tasks: list[str], seeds: list[int], epochs: dict, here: dict) -> list[dict]:
    """The key of every run asked for, seed by seed, task by task, ours before HF."""
    return [{"task": task, "impl": impl, "seed": seed, "epochs": epochs[task],
             "commit": here["commit"], "bench_code": here["bench_code"], "cpu": here["cpu"]}
            for seed in seeds for task in tasks for impl in IMPLS]


def run_all(opts, seeds: list[int], epochs: dict, log: Path, here: dict) -> list[dict]:
    """Every planned run not yet in `log`, each appended to it as it finishes; returns the
    planned runs' rows (old and new)."""
    runs, keys = load_runs(log), plan(opts.tasks, seeds, epochs, here)
    scratch = Path(tempfile.mkdtemp(prefix="bertflow-tasks-"))
    try:
        for key in keys:
            if any(same_run(r, key) for r in runs):
                continue
            result = RUNNERS[key["impl"]](key["task"], key["epochs"], key["seed"], opts.shared,
                                          scratch)
            row = {**key, **result, "versions": here["versions"],
                   "utc": datetime.now(UTC).isoformat(timespec="seconds")}
            runs.append(row)
            with open(log, "a") as f:
                f.write(json.dumps(row) + "\n")
            figures = ", ".join(f"{m} {row['metrics'][m]:.4f}" for m in METRICS[key["task"]])
            print(f"seed {key['seed']} {key['task']} {key['impl']}: {figures}, train "
                  f"{row['train_s']:.1f} s, command {row['command_s']:.1f} s", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [r for r in runs if any(same_run(r, key) for key in keys)]


def side(rows: list[dict], metrics: tuple[str, ...]) -> dict:
    """One implementation's runs of one task: their count, seeds, collapsed count and the mean and
    sd of each metric and of train_s and command_s."""
    return {"runs": len(rows), "seeds": sorted(r["seed"] for r in rows),
            "collapsed": sum(r["collapsed"] for r in rows),
            **{m: mean_sd([r["metrics"][m] for r in rows]) for m in metrics},
            **{f: mean_sd([r[f] for r in rows]) for f in ("train_s", "command_s")}}


def summarize(runs: list[dict], tasks: list[str]) -> dict:
    """Per task that ran: each side's figures and, once both ran, the train ratio ours / HF and
    whether the target holds (every metric's mean >= HF's, mean train_s <= HF's)."""
    out = {}
    for task in tasks:
        rows = {impl: [r for r in runs if r["task"] == task and r["impl"] == impl]
                for impl in IMPLS}
        if not any(rows.values()):
            continue
        entry = {"metrics": METRICS[task], "epochs": (rows["ours"] or rows["hf"])[0]["epochs"],
                 **{impl: side(v, METRICS[task]) for impl, v in rows.items() if v}}
        if all(rows.values()):
            ours, hf = entry["ours"], entry["hf"]
            entry["ratio"] = ours["train_s"][0] / hf["train_s"][0]
            entry["metric_met"] = all(ours[m][0] >= hf[m][0] for m in METRICS[task])
            entry["time_met"] = entry["ratio"] <= 1.0
            entry["met"] = entry["metric_met"] and entry["time_met"]
        out[task] = entry
    return out


def cell(entry: dict, impl: str, figure: str, digits: int) -> str:
    if impl not in entry:
        return "-"
    return f"{pm(entry[impl][figure], digits)} ({entry[impl]['runs']})"


def verdict(entry: dict) -> str:
    if "met" not in entry:
        return "-"
    missed = [why for why, ok in (("metric", entry["metric_met"]), ("time", entry["time_met"]))
              if not ok]
    return "met" if entry["met"] else f"missed ({', '.join(missed)})"


def summary_table(summary: dict) -> list[str]:
    lines = [("| task | epochs | metric | ours mean +/- sd (n) | HF mean +/- sd (n) | "
              "ours train s | HF train s | ratio | target met? |"),
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for task, e in summary.items():
        ratio = f"{e['ratio']:.3f}" if "ratio" in e else "-"
        lines += [f"| {task} | {e['epochs']:g} | {m} | {cell(e, 'ours', m, 4)} | "
                  f"{cell(e, 'hf', m, 4)} | {cell(e, 'ours', 'train_s', 1)} | "
                  f"{cell(e, 'hf', 'train_s', 1)} | {ratio} | {verdict(e)} |" for m in e["metrics"]]
    return lines


def orientation_table(summary: dict) -> list[str]:
    lines = ["| task | metric | BERT-Tiny, GLUE test (published) | ours dev mean | HF dev mean |",
             "|---|---|---:|---:|---:|"]
    for task, e in summary.items():
        for m in e["metrics"]:
            ours, hf = (f"{e[impl][m][0]:.3f}" if impl in e else "-" for impl in IMPLS)
            lines.append(f"| {task} | {m} | {BERT_TINY[task][m]:.3f} | {ours} | {hf} |")
    return lines


def run_table(runs: list[dict]) -> list[str]:
    lines = [("| task | impl | seed | epochs | dev metrics | collapsed | train s | command s | "
              "command CPU s | peak RSS MB |"), "|---|---|---:|---:|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['task']} | {r['impl']} | {r['seed']} | {r['epochs']:g} | "
              + ", ".join(f"{k} {v:.4f}" for k, v in r["metrics"].items())
              + f" | {'yes' if r['collapsed'] else 'no'} | {r['train_s']:.1f} | "
              f"{r['command_s']:.1f} | {r['command_cpu_s']:.1f} | {r['peak_rss_mb']} |"
              for r in runs]
    return lines


def report(runs: list[dict], summary: dict, here: dict) -> str:
    """The markdown: the summary and its targets, BERT-Tiny for orientation, every run, the
    machine."""
    cpu = here["cpu"]
    lines = ["# GLUE tasks: bertflow vs Hugging Face, MiniLM-L3", "",
             ("Recipe: lr 2e-5, batch 32, max_seq_length 128, warmup 0.1, dynamic padding on "
              "both sides; epochs as listed (SST-2: 1 epoch, 67,349 sentences). Target: ours' "
              "mean dev metric >= HF's at a mean train s <= HF's (ratio <= 1)."), "",
             *summary_table(summary), "",
             ("For orientation only: BERT-Tiny (2 layers, hidden 128; Turc et al. 2019) on the "
              "GLUE test set, against the dev-set means here (MiniLM-L3: 3 layers, hidden 384)."),
             "", *orientation_table(summary), "", *run_table(runs), "",
             f"CPU: {cpu['model']}, {cpu['cores']} cores, flags "
             f"{' '.join(cpu['flags']) or 'none of note'}; commit {here['commit']}, bench code "
             f"{here['bench_code']}; "
             + ", ".join(f"{k} {v}" for k, v in here["versions"].items())]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--tasks", nargs="+", default=list(EPOCHS), choices=list(EPOCHS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=None,
                        help="where tasks.{jsonl,md,json} go (bench/results; --quick: temp)")
    parser.add_argument("--fresh", action="store_true", help="start a new tasks.jsonl")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: the tables from the rows already in tasks.jsonl that "
                             "were measured on this CPU by the newest commit and bench code "
                             "among them (a run stopped part way, or seeds run a few at a time)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: the first seed, 5 steps a task, into a temp folder "
                             "unless --out")
    return parser.parse_args()


def results_log(opts) -> Path:
    """tasks.jsonl in --out (default bench/results; --quick: a new temp folder), emptied first
    with --fresh."""
    out = opts.out or (Path(tempfile.mkdtemp(prefix="bertflow-tasks-quick-")) if opts.quick
                       else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    if opts.fresh:
        (out / "tasks.jsonl").unlink(missing_ok=True)
    return out / "tasks.jsonl"


def logged_runs(log: Path, tasks: list[str], here: dict) -> tuple[list[dict], dict]:
    """The rows of `log` for `tasks` measured on this CPU by its newest (commit, bench code), of
    the seeds both sides finished, and `here` naming that commit and bench code."""
    rows = [r for r in load_runs(log) if r["cpu"] == here["cpu"] and r["task"] in tasks]
    if not rows:
        sys.exit(f"{log}: no rows of {', '.join(tasks)} measured on this CPU")
    newest = {"commit": rows[-1]["commit"], "bench_code": rows[-1]["bench_code"]}
    rows = [r for r in rows if same_run(r, newest)]
    sides = {}
    for r in rows:
        sides.setdefault((r["task"], r["seed"]), set()).add(r["impl"])
    paired = [r for r in rows if sides[r["task"], r["seed"]] == set(IMPLS)]  # both sides ran
    return paired, {**here, **newest}


def main() -> None:
    opts = parse_args()
    seeds, epochs = (opts.seeds[:1], QUICK_EPOCHS) if opts.quick else (opts.seeds, EPOCHS)
    log = results_log(opts)
    out = log.parent
    here = {"commit": bertflow_commit(), "bench_code": bench_code(), **machine()}
    if opts.report:
        runs, here = logged_runs(log, opts.tasks, here)
    else:
        runs = run_all(opts, seeds, epochs, log, here)
    summary = summarize(runs, opts.tasks)
    table = report(runs, summary, here)
    print(table)
    (out / "tasks.md").write_text(table)
    header = {k: here[k] for k in ("commit", "bench_code", "cpu", "versions")}
    (out / "tasks.json").write_text(json.dumps(
        {**header, "bert_tiny": BERT_TINY, "runs": runs, "summary": summary}, indent=1) + "\n")
    print(json.dumps({**header, "out": str(out), "summary": summary}))


if __name__ == "__main__":
    main()
