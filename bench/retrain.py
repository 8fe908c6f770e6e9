"""Scheduled retraining on the real MRPC: GLUE's train delivered in growing drops, each one
retrained on, scored on a pinned evaluation set (GLUE's dev) and promoted only past the gate.

    drops      a seeded shuffle of GLUE train's rows, then prefixes (SHARES: 40%, 70%, 100%),
               header kept, lines copied as they are (BOM, unbalanced quotes); each drop folder
               holds its train.tsv and GLUE's dev.tsv and test.tsv. They arrive one at a time in
               one drop location (written under a hidden name, then renamed into place).
    run        after each drop: `python -m flows.cli run --drops LOC --eval-set EVAL --checkpoint
               <MiniLM-L3 zip> --seed 1 --home HOME --json --config C`, C setting
               data.row_bounds.train [1000, 5000] (MRPC's own bounds reject a 40% drop); one
               HOME for the whole sequence, so each run faces the champion of the one before;
               the recipe's defaults otherwise (3 epochs, lr 2e-5, batch 32, max_seq_length 128)
    read back  the new version's tags in HOME's MLflow store (model bertflow-mrpc): the decision
               (promotion_decision), gate.* (F1 of challenger and incumbent, the gain and its 95%
               paired-bootstrap interval, flips), drop, compared_with; and the champion alias.

Each run is appended at once to retrain.jsonl in --out with the commit, bench code, CPU and the
sequence it belongs to; a rerun with the same commit, bench code, CPU and settings runs nothing
once a whole sequence is logged, and with --work continues a sequence stopped part way (its
home and drops are kept there). Writes retrain.{md,json,png}; the last line printed is one JSON
object.

    python bench/retrain.py [--shares 0.4 0.7 1.0] [--work DIR] [--fresh] [--out DIR]
    python bench/retrain.py --report   # md, json and png again from the rows logged
    python bench/retrain.py --quick    # smoke test: 0.05 epoch a drop, into a temp folder
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# bench/ is the first sys.path entry
from accuracy import bertflow_commit, load_runs, same_run, timed
from accuracy_report import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODEL = "bertflow-mrpc"
SHARES = (0.4, 0.7, 1.0)
SHUFFLE_SEED, SEED = 20261102, 1
QUICK_EPOCHS = 0.05  # 2 steps on a 40% drop, 5 on all of train
ROW_BOUNDS = [1000, 5000]
RECIPE = "3 epochs, lr 2e-5, batch 32, max_seq_length 128, warmup 0.1 (TrainConfig's defaults)"
GATE_TAGS = ("challenger", "incumbent", "incumbent_name", "delta", "ci_low", "ci_high",
             "p_value", "flips_right", "flips_wrong", "examples", "resamples", "seed", "metric",
             "alpha", "min_delta")  # gate.<name> on the version; gate.seed is kept as gate_seed
NOT_TRAINED = ("no-op", "blocked-by-drift")  # the answer is the champion: no new version


def bench_code() -> str:
    """A hash of this bench as it is now: rows measured by another version are not reused."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:8]


def prefixes(lines: list[str], shares: list[float], seed: int) -> list[list[str]]:
    """The header, then the first round(share * n) rows of one seeded shuffle, per share.

    >>> [len(p) for p in prefixes(["h\\n", "a\\n", "b\\n", "c\\n", "d\\n"], [0.5, 1.0], 1)]
    [3, 5]
    >>> prefixes(["h\\n", "a\\n", "b\\n"], [0.5, 1.0], 1)[1][0]
    'h\\n'
    """
    header, rows = lines[0], lines[1:]
    order = rows[:]
    random.Random(seed).shuffle(order)
    return [[header, *order[:round(share * len(rows))]] for share in shares]


def drop_name(index: int, share: float) -> str:
    """A drop folder's name: sorts in delivery order.

    >>> drop_name(0, 0.4), drop_name(2, 1.0)
    ('drop-1-040pct', 'drop-3-100pct')
    """
    return f"drop-{index + 1}-{round(share * 100):03d}pct"


def deliver(drops: Path, name: str, train: list[str], glue: Path) -> None:
    """A drop folder: its train.tsv and GLUE's dev and test, written under a hidden name and
    renamed into place (a run never sees half a drop)."""
    hidden = drops / f".{name}"
    shutil.rmtree(hidden, ignore_errors=True)
    hidden.mkdir(parents=True)
    (hidden / "train.tsv").write_bytes("".join(train).encode("utf-8"))
    for split in ("dev", "test"):
        shutil.copyfile(glue / f"{split}.tsv", hidden / f"{split}.tsv")
    hidden.rename(drops / name)


def parsed(value: str | None) -> float | str | None:
    """A tag as the gate wrote it: a number, "none" as None, anything else as text.

    >>> parsed("0.8123"), parsed("none"), parsed("champion v1"), parsed("12")
    (0.8123, None, 'champion v1', 12.0)
    """
    if value is None or value == "none":
        return None
    try:
        return float(value)
    except ValueError:
        return value


def version_record(home: Path, result: dict) -> dict:
    """The decision recorded on the run's new version of MODEL in home's MLflow store (none for
    a run that made no version), and the champion after the run."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(f"sqlite:///{(home / 'mlflow' / 'mlflow.db').resolve()}")
    try:
        champion = str(client.get_model_version_by_alias(MODEL, "champion").version)
    except MlflowException:
        champion = None
    if result["code"] in NOT_TRAINED:
        return {"decision": result["code"], "reason": result["reason"],
                **dict.fromkeys(GATE_TAGS), "champion_after": champion}
    mv = client.get_model_version(MODEL, result["version"])
    gate = {key: parsed(mv.tags.get(f"gate.{key}")) for key in GATE_TAGS}
    gate["gate_seed"] = gate.pop("seed")
    return {"decision": mv.tags.get("promotion_decision"), "reason": mv.description,
            "drop_tag": mv.tags.get("drop"), "compared_with": mv.tags.get("compared_with"),
            **gate, "champion_after": champion}


def retrain(work: Path, checkpoint: Path, epochs: float | None) -> dict:
    """One `bertflow run` over the drop location in `work`: its summary's figures, its cost."""
    config = work / "config.json"
    cfg = {"data": {"row_bounds": {"train": ROW_BOUNDS}}}
    config.write_text(json.dumps(cfg if epochs is None else {**cfg, "train": {"epochs": epochs}}))
    cmd = [sys.executable, "-m", "flows.cli", "run", "--drops", str(work / "drops"),
           "--eval-set", str(work / "eval"), "--checkpoint", str(checkpoint), "--seed",
           str(SEED), "--home", str(work / "home"), "--json", "--config", str(config)]
    stdout, usage = timed(cmd)
    summary = json.loads(stdout.strip().splitlines()[-1])
    model = summary["model"]
    return {"version": str(model["version"]), "code": model["code"],
            "reason": model["decision"], **usage,
            "flow_s": summary["seconds"], "train_s": summary["tasks"]["train"]["seconds"],
            "dev_accuracy": summary["dev_metrics"].get("accuracy"),
            "dev_f1": summary["dev_metrics"].get("f1")}


def sequence(work: Path, key: dict) -> str:
    """The id of the sequence `work` holds for `key` (kept in work/sequence.json), a new one
    (work emptied) when it holds another's."""
    marker = work / "sequence.json"
    if marker.is_file() and json.loads(marker.read_text())["key"] == key:
        return json.loads(marker.read_text())["sequence"]
    if marker.is_file():
        shutil.rmtree(work)
    elif work.is_dir() and any(work.iterdir()):
        sys.exit(f"{work}: not empty and not a retrain work folder")
    work.mkdir(parents=True, exist_ok=True)
    name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:6]
    marker.write_text(json.dumps({"key": key, "sequence": name}))
    return name


def complete(runs: list[dict], key: dict, drops: int) -> list[dict]:
    """The rows of the newest sequence of `key` that has every drop logged, else []."""
    rows = [r for r in runs if same_run(r, key)]
    for name in reversed(list(dict.fromkeys(r["sequence"] for r in rows))):
        mine = [r for r in rows if r["sequence"] == name]
        if len(mine) == drops:
            return mine
    return []


def run_sequence(opts, log: Path, key: dict, here: dict) -> list[dict]:
    """Each drop delivered and retrained on, its row appended to `log` as it finishes; the
    sequence's rows. A sequence already in `log` whole runs nothing."""
    runs = load_runs(log)
    if done := complete(runs, key, len(key["shares"])):
        return done
    work = opts.work or Path(tempfile.mkdtemp(prefix="bertflow-retrain-"))
    seq = sequence(work, key)
    print(f"sequence {seq} in {work}", flush=True)
    glue = opts.shared / "data" / "mrpc"
    lines = (glue / "train.tsv").read_bytes().decode("utf-8").splitlines(keepends=True)
    (work / "eval").mkdir(exist_ok=True)
    shutil.copyfile(glue / "dev.tsv", work / "eval" / "dev.tsv")
    checkpoint = opts.shared / "checkpoints" / "minilm-l3-h384-uncased.zip"
    rows = [r for r in runs if r.get("sequence") == seq]
    for i, (share, train) in enumerate(zip(key["shares"], prefixes(lines, key["shares"],
                                                                     key["shuffle_seed"]))):
        name = drop_name(i, share)
        if any(r["drop"] == name for r in rows):
            continue
        if not (work / "drops" / name).is_dir():
            deliver(work / "drops", name, train, glue)
        result = retrain(work, checkpoint, key["epochs"])
        row = {**key, "sequence": seq, "drop": name, "share": share, "train_rows": len(train) - 1,
               **result, **version_record(work / "home", result),
               "versions": here["versions"], "utc": datetime.now(UTC).isoformat(timespec="seconds")}
        rows.append(row)
        with open(log, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name} ({row['train_rows']} rows): v{row['version']} {row['decision']}, F1 "
              f"{num(row['challenger'])} vs {row['incumbent_name']} {num(row['incumbent'])}, "
              f"{row['command_s']:.0f} s", flush=True)
    if opts.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def num(value, digits: int = 4, sign: bool = False) -> str:
    return "-" if value is None else f"{value:{'+' if sign else ''}.{digits}f}"


def table(rows: list[dict]) -> list[str]:
    lines = [("| drop | share | train rows | version | decision | F1 challenger | incumbent | "
              "F1 incumbent | gain | 95% interval | flips right / wrong | champion after | "
              "run s | train s | peak RSS MB |"),
             "|---|---:|---:|---:|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['drop']} | {r['share']:.0%} | {r['train_rows']} | v{r['version']} | "
              f"{r['decision']} | {num(r['challenger'])} | {r['incumbent_name']} | "
              f"{num(r['incumbent'])} | {num(r['delta'], sign=True)} | "
              f"{num(r['ci_low'], sign=True)} .. {num(r['ci_high'], sign=True)} | "
              f"{num(r['flips_right'], 0)} / {num(r['flips_wrong'], 0)} | "
              f"{'v' + r['champion_after'] if r['champion_after'] else 'none'} | "
              f"{r['command_s']:.0f} | {r['train_s']:.0f} | "
              f"{r['peak_rss_mb']} |" for r in rows]
    return lines


def report(rows: list[dict], here: dict) -> str:
    """The markdown: the recipe and gate, one row per drop, each decision's reason, the machine."""
    first, cpu = rows[0], rows[0]["cpu"]
    gated = next((r for r in rows if r["metric"]), first)  # a row the gate decided
    epochs = RECIPE if first["epochs"] is None else f"{first['epochs']:g} epochs (smoke test)"
    lines = ["# Scheduled retraining on MRPC, MiniLM-L3", "",
             (f"GLUE train delivered as growing drops, prefixes of one seeded shuffle (seed "
              f"{first['shuffle_seed']}), into one drop location and one home; each run "
              f"retrains on the newest drop (seed {SEED}; {epochs}), scores the pinned evaluation "
              f"set (GLUE dev, {num(gated['examples'], 0)} pairs) and promotes only when the "
              f"paired-bootstrap interval of the {gated['metric']} gain excludes 0 "
              f"({num(gated['resamples'], 0)} resamples, seed {num(gated['gate_seed'], 0)}, "
              f"alpha {gated['alpha']}, min_delta {gated['min_delta']}); a first version faces "
              "the majority-class predictor. Flips: evaluation pairs the new version gets right "
              "that the incumbent got wrong / the reverse."), "", *table(rows), "",
             *[f"- {r['drop']}: {r['reason']}" for r in rows], "",
             f"CPU: {cpu['model']}, {cpu['cores']} cores; commit {first['commit']}, bench code "
             f"{first['bench_code']}, sequence {first['sequence']}; "
             + ", ".join(f"{k} {v}" for k, v in here["versions"].items())]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out: Path) -> None:
    """Per drop: the challenger's F1 beside its incumbent's; the gain with its 95% interval."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    nan = float("nan")
    rows = [{k: nan if v is None else v for k, v in r.items()} for r in rows]
    x = range(len(rows))
    labels = [f"{r['drop']}\n{r['train_rows']} rows\n"
              f"vs {r['incumbent_name'].removesuffix(' predictor')}\n{r['decision']}" for r in rows]
    left.bar([i - 0.2 for i in x], [r["challenger"] for r in rows], 0.4, label="challenger")
    left.bar([i + 0.2 for i in x], [r["incumbent"] for r in rows], 0.4, color="tab:gray",
             label="incumbent (champion, or majority class)")
    for i, r in enumerate(rows):
        for dx, value in ((-0.2, r["challenger"]), (0.2, r["incumbent"])):
            left.annotate(f"{value:.3f}", (i + dx, value), ha="center", va="bottom", fontsize=7)
    floor = min((r["incumbent"] for r in rows if r["incumbent"] == r["incumbent"]), default=0.6)
    left.set_ylim(floor - 0.05, 1.0)
    left.set_xticks(list(x), labels, fontsize=8)
    left.set_ylabel("F1 on GLUE dev (408 pairs)")
    left.legend(fontsize=8, loc="upper left")
    gain = [r["delta"] for r in rows]
    errors = [[g - r["ci_low"] for g, r in zip(gain, rows)],
              [r["ci_high"] - g for g, r in zip(gain, rows)]]
    right.errorbar(list(x), gain, yerr=errors, fmt="o", capsize=5)
    right.axhline(0, color="black", linewidth=1, linestyle=":")
    right.set_xticks(list(x), labels, fontsize=8)
    right.set_ylabel("F1 gain over the incumbent, 95% interval")
    fig.suptitle(f"Scheduled retraining on MRPC (MiniLM-L3, {rows[0]['cpu']['model']})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--shares", type=float, nargs="+", default=list(SHARES))
    parser.add_argument("--out", type=Path, default=None,
                        help="where retrain.{jsonl,md,json,png} go (bench/results; --quick: temp)")
    parser.add_argument("--work", type=Path, default=None,
                        help="drops, evaluation set and home, kept: a rerun continues there")
    parser.add_argument("--fresh", action="store_true", help="start a new retrain.jsonl")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: md, json and png from the newest whole sequence "
                             "logged on this CPU")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {QUICK_EPOCHS} epoch a drop, into a temp folder")
    return parser.parse_args()


def logged(log: Path, cpu: dict) -> list[dict]:
    """The newest whole sequence in `log` measured on this CPU."""
    rows = [r for r in load_runs(log) if r["cpu"] == cpu]
    if not rows:
        sys.exit(f"{log}: no rows measured on this CPU")
    last = rows[-1]
    key = {k: last[k] for k in ("commit", "bench_code", "shares", "shuffle_seed", "epochs")}
    return complete(rows, key, len(last["shares"])) or sys.exit(f"{log}: no whole sequence")


def main() -> None:
    opts = parse_args()
    out = opts.out or (Path(tempfile.mkdtemp(prefix="bertflow-retrain-quick-")) if opts.quick
                       else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "retrain.jsonl"
    if opts.fresh:
        log.unlink(missing_ok=True)
    here = {"commit": bertflow_commit(), "bench_code": bench_code(), **machine()}
    key = {"commit": here["commit"], "bench_code": here["bench_code"], "cpu": here["cpu"],
           "shares": opts.shares, "shuffle_seed": SHUFFLE_SEED,
           "epochs": QUICK_EPOCHS if opts.quick else None}
    rows = logged(log, here["cpu"]) if opts.report else run_sequence(opts, log, key, here)
    text = report(rows, here)
    print(text)
    (out / "retrain.md").write_text(text)
    header = {k: rows[0][k] for k in ("commit", "bench_code", "cpu", "versions", "sequence")}
    (out / "retrain.json").write_text(json.dumps({**header, "recipe": RECIPE, "runs": rows},
                                                 indent=1) + "\n")
    plot(rows, out / "retrain.png")
    print(json.dumps({**header, "out": str(out), "decisions": {
        r["drop"]: r["decision"] for r in rows}}))


if __name__ == "__main__":
    main()
