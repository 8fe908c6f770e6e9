"""Scheduled retraining on the real MRPC: GLUE's train delivered in growing drops, each one
retrained on, scored on a pinned evaluation set (GLUE's dev) and promoted only past the gate.

    drops      a seeded shuffle of GLUE train's rows, then prefixes (SHARES: 40%, 70%, 100%),
               header kept, lines copied as they are (BOM, unbalanced quotes); each drop folder
               holds its train.tsv and GLUE's dev.tsv and test.tsv. They arrive one at a time in
               one drop location (written under a hidden name, then renamed into place).
    run        after each drop: `python -m flows.cli run --drops LOC --eval-set EVAL --checkpoint
               <MiniLM-L3 zip> --seed 1 --home HOME --json --config C`, C setting
               data.row_bounds.train [1000, 5000] (MRPC's own bounds reject a 40% drop) and
               registry.promote_metric (--promote-metric: MRPC's f1, or accuracy, where the
               gate also applies McNemar's exact test); one HOME for the whole sequence, so
               each run faces the champion of the one before; the recipe's defaults otherwise
               (3 epochs, lr 2e-5, batch 32, max_seq_length 128)
    read back  the new version's tags in HOME's MLflow store (model bertflow-mrpc): the decision
               (promotion_decision), gate.* (the promote metric of challenger and incumbent,
               the gain and its 95% paired-bootstrap interval, McNemar's p, flips), drop,
               compared_with; and the champion alias.

Each run is appended at once to retrain.jsonl in --out with the commit, bench code, CPU, promote
metric and the sequence it belongs to; a rerun with the same commit, bench code, CPU and
settings runs nothing once a whole sequence is logged, and with --work continues a sequence
stopped part way (its home and drops are kept there). Writes retrain.{md,json,png} over every
promote metric logged on this CPU (its newest whole sequence each); the last line printed is
one JSON object.

    python bench/retrain.py [--promote-metric accuracy] [--shares 0.4 0.7 1.0] [--work DIR]
                            [--fresh] [--out DIR]
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
from data_contracts.specs import default_metric

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODEL = "bertflow-mrpc"
PROMOTE_METRIC = default_metric("mrpc")  # f1; rows logged without promote_metric promoted on it
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


def run_config(epochs: float | None, metric: str) -> dict:
    """The --config of each run: MRPC's row bounds widened, the promote metric, a smoke test's
    epochs.

    >>> run_config(None, "accuracy")["registry"], run_config(0.05, "f1")["train"]
    ({'promote_metric': 'accuracy'}, {'epochs': 0.05})
    """
    cfg = {"data": {"row_bounds": {"train": ROW_BOUNDS}}, "registry": {"promote_metric": metric}}
    return cfg if epochs is None else {**cfg, "train": {"epochs": epochs}}


def retrain(work: Path, checkpoint: Path, epochs: float | None, metric: str) -> dict:
    """One `bertflow run` over the drop location in `work`: its summary's figures, its cost."""
    import yaml

    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(run_config(epochs, metric), sort_keys=False))
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


def newest_whole(rows: list[dict]) -> list[dict]:
    """The rows of the newest sequence in `rows` that has every one of its drops, else [].

    >>> row = lambda seq, drop: {"sequence": seq, "drop": drop, "shares": [0.5, 1.0]}
    >>> [r["drop"] for r in newest_whole([row("a", 1), row("a", 2), row("b", 1)])]
    [1, 2]
    """
    for name in reversed(list(dict.fromkeys(r["sequence"] for r in rows))):
        mine = [r for r in rows if r["sequence"] == name]
        if len(mine) == len(mine[0]["shares"]):
            return mine
    return []


def promote_metric(row: dict) -> str:
    """The metric a row's gate promoted on (rows logged before the option: PROMOTE_METRIC).

    >>> promote_metric({"promote_metric": "accuracy"}), promote_metric({})
    ('accuracy', 'f1')
    """
    return row.get("promote_metric", PROMOTE_METRIC)


def run_sequence(opts, log: Path, key: dict, here: dict) -> list[dict]:
    """Each drop delivered and retrained on, its row appended to `log` as it finishes; the
    sequence's rows. A sequence already in `log` whole runs nothing."""
    runs = load_runs(log)
    if done := newest_whole([r for r in runs if same_run(r, key)]):
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
        result = retrain(work, checkpoint, key["epochs"], key["promote_metric"])
        row = {**key, "sequence": seq, "drop": name, "share": share, "train_rows": len(train) - 1,
               **result, **version_record(work / "home", result),
               "versions": here["versions"], "utc": datetime.now(UTC).isoformat(timespec="seconds")}
        rows.append(row)
        with open(log, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name} ({row['train_rows']} rows): v{row['version']} {row['decision']}, "
              f"{label(key['promote_metric'])} {num(row['challenger'])} vs "
              f"{row['incumbent_name']} {num(row['incumbent'])}, McNemar p "
              f"{num(row['p_value'], 3)}, {row['command_s']:.0f} s", flush=True)
    if opts.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def num(value, digits: int = 4, sign: bool = False) -> str:
    return "-" if value is None else f"{value:{'+' if sign else ''}.{digits}f}"


def label(metric: str) -> str:
    """A metric as the report names it.

    >>> label("f1"), label("accuracy")
    ('F1', 'accuracy')
    """
    return {"f1": "F1", "mcc": "MCC"}.get(metric, metric)


def pvalue(value: float | None) -> str:
    """McNemar's p as the gate's decision.md writes it.

    >>> pvalue(0.000123), pvalue(0.5), pvalue(None)
    ('0.000123', '0.5', '-')
    """
    return "-" if value is None else f"{value:.3g}"


def table(rows: list[dict], metric: str) -> list[str]:
    """One line per drop; a McNemar p column where the gate computed one."""
    name, mcnemar = label(metric), any(r["p_value"] is not None for r in rows)
    head = ["drop", "share", "train rows", "version", "decision", f"{name} challenger",
            "incumbent", f"{name} incumbent", "gain", "95% interval",
            *["McNemar p"] * mcnemar, "flips right / wrong", "champion after", "run s",
            "train s", "peak RSS MB"]
    align = ["---", *["---:"] * 3, "---", "---:", "---", "---:", "---:", "---",
             *["---:"] * (5 + mcnemar)]

    def cells(r: dict) -> list[str]:
        return [r["drop"], f"{r['share']:.0%}", str(r["train_rows"]), f"v{r['version']}",
                r["decision"], num(r["challenger"]), r["incumbent_name"] or "-",
                num(r["incumbent"]), num(r["delta"], sign=True),
                f"{num(r['ci_low'], sign=True)} .. {num(r['ci_high'], sign=True)}",
                *[pvalue(r["p_value"])] * mcnemar,
                f"{num(r['flips_right'], 0)} / {num(r['flips_wrong'], 0)}",
                f"v{r['champion_after']}" if r["champion_after"] else "none",
                f"{r['command_s']:.0f}", f"{r['train_s']:.0f}", str(r["peak_rss_mb"])]
    return [f"| {' | '.join(head)} |", f"|{'|'.join(align)}|",
            *(f"| {' | '.join(cells(r))} |" for r in rows)]


def section(metric: str, rows: list[dict]) -> list[str]:
    """One sequence: its table, each decision's reason, what it measured."""
    first = rows[0]
    versions = ", ".join(f"{k} {v}" for k, v in first["versions"].items())
    return [f"## Promoting on {label(metric)}", "", *table(rows, metric), "",
            *[f"- {r['drop']}: {r['reason']}" for r in rows], "",
            f"Commit {first['commit']}, bench code {first['bench_code']}, sequence "
            f"{first['sequence']}; {versions}", ""]


def report(groups: dict[str, list[dict]]) -> str:
    """The markdown: the recipe and gate, then one section per promote metric."""
    rows = [r for sequence_rows in groups.values() for r in sequence_rows]
    first, cpu = rows[0], rows[0]["cpu"]
    gated = next((r for r in rows if r["metric"]), first)  # a row the gate decided
    epochs = RECIPE if first["epochs"] is None else f"{first['epochs']:g} epochs (smoke test)"
    lines = ["# Scheduled retraining on MRPC, MiniLM-L3", "",
             (f"GLUE train delivered as growing drops, prefixes of one seeded shuffle (seed "
              f"{first['shuffle_seed']}), into one drop location and one home per sequence; "
              f"each run retrains on the newest drop (seed {SEED}; {epochs}), scores the pinned "
              f"evaluation set (GLUE dev, {num(gated['examples'], 0)} pairs) and promotes only "
              "when the paired-bootstrap interval of the gain in the sequence's promote metric "
              f"(registry.promote_metric) excludes 0 ({num(gated['resamples'], 0)} resamples, "
              f"seed {num(gated['gate_seed'], 0)}, alpha {gated['alpha']}, min_delta "
              f"{gated['min_delta']}) and, for accuracy, McNemar's exact test on the flips "
              "reaches alpha; a first version faces the majority-class predictor, a later one "
              "the champion re-scored on the same pairs. Flips: evaluation pairs the new "
              "version gets right that the incumbent got wrong / the reverse."), ""]
    for metric, sequence_rows in groups.items():
        lines += section(metric, sequence_rows)
    lines.append(f"CPU: {cpu['model']}, {cpu['cores']} cores")
    return "\n".join(lines) + "\n"


def panels(left, right, metric: str, rows: list[dict]) -> None:
    """One sequence: the challenger's score beside its incumbent's; the gain with its interval
    (and McNemar's p where there is one)."""
    name, nan = label(metric), float("nan")
    rows = [{k: nan if v is None else v for k, v in r.items()} for r in rows]
    x = range(len(rows))
    labels = [f"{r['drop']}\n{r['train_rows']} rows\n"
              f"vs {str(r['incumbent_name']).removesuffix(' predictor')}\n{r['decision']}"
              for r in rows]
    left.bar([i - 0.2 for i in x], [r["challenger"] for r in rows], 0.4, label="challenger")
    left.bar([i + 0.2 for i in x], [r["incumbent"] for r in rows], 0.4, color="tab:gray",
             label="incumbent (champion, or majority class)")
    for i, r in enumerate(rows):
        for dx, value in ((-0.2, r["challenger"]), (0.2, r["incumbent"])):
            left.annotate(f"{value:.3f}", (i + dx, value), ha="center", va="bottom", fontsize=7)
    floor = min((r["incumbent"] for r in rows if r["incumbent"] == r["incumbent"]), default=0.6)
    left.set_ylim(floor - 0.05, 1.0)
    left.set_xticks(list(x), labels, fontsize=8)
    left.set_ylabel(f"{name} on GLUE dev ({rows[0]['examples']:.0f} pairs)")
    left.set_title(f"promoting on {name}: commit {rows[0]['commit']}", fontsize=9)
    left.legend(fontsize=8, loc="upper left")
    gain = [r["delta"] for r in rows]
    errors = [[g - r["ci_low"] for g, r in zip(gain, rows)],
              [r["ci_high"] - g for g, r in zip(gain, rows)]]
    right.errorbar(list(x), gain, yerr=errors, fmt="o", capsize=5)
    for i, r in enumerate(rows):
        if r["p_value"] == r["p_value"]:
            right.annotate(f"  McNemar p {r['p_value']:.2g}", (i, gain[i]), fontsize=7)
    right.axhline(0, color="black", linewidth=1, linestyle=":")
    right.set_xticks(list(x), labels, fontsize=8)
    right.set_ylabel(f"{name} gain over the incumbent, 95% interval")
    right.set_title(f"promoting on {name}: sequence {rows[0]['sequence']}", fontsize=9)


def plot(groups: dict[str, list[dict]], out: Path) -> None:
    """One row of panels per promote metric's sequence."""
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 4.8 * len(groups)), squeeze=False)
    for (metric, rows), (left, right) in zip(groups.items(), axes):
        panels(left, right, metric, rows)
    cpu = next(iter(groups.values()))[0]["cpu"]["model"]
    fig.suptitle(f"Scheduled retraining on MRPC (MiniLM-L3, {cpu})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--shares", type=float, nargs="+", default=list(SHARES))
    parser.add_argument("--promote-metric", default=PROMOTE_METRIC,
                        help=f"registry.promote_metric of every run (default: MRPC's, "
                             f"{PROMOTE_METRIC}; accuracy adds McNemar's exact test); a "
                             "sequence of its own in retrain.jsonl")
    parser.add_argument("--out", type=Path, default=None,
                        help="where retrain.{jsonl,md,json,png} go (bench/results; --quick: temp)")
    parser.add_argument("--work", type=Path, default=None,
                        help="drops, evaluation set and home, kept: a rerun continues there")
    parser.add_argument("--fresh", action="store_true", help="start a new retrain.jsonl")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: md, json and png from the newest whole sequence "
                             "of each promote metric logged on this CPU")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {QUICK_EPOCHS} epoch a drop, into a temp folder")
    return parser.parse_args()


def logged(log: Path, cpu: dict) -> dict[str, list[dict]]:
    """Per promote metric (in the order first logged), its newest whole sequence in `log`
    measured on this CPU."""
    rows = [r for r in load_runs(log) if r["cpu"] == cpu]
    groups = {metric: newest_whole([r for r in rows if promote_metric(r) == metric])
              for metric in dict.fromkeys(map(promote_metric, rows))}
    return {metric: g for metric, g in groups.items() if g} or sys.exit(
        f"{log}: no whole sequence measured on this CPU")


def write_results(groups: dict[str, list[dict]], out: Path) -> dict:
    """retrain.{md,json,png} in `out`; the summary line's object."""
    text = report(groups)
    print(text)
    (out / "retrain.md").write_text(text)
    header = ("commit", "bench_code", "versions", "sequence")
    sequences = [{"promote_metric": metric, **{k: rows[0][k] for k in header}, "runs": rows}
                 for metric, rows in groups.items()]
    cpu = sequences[0]["runs"][0]["cpu"]
    (out / "retrain.json").write_text(json.dumps(
        {"cpu": cpu, "recipe": RECIPE, "sequences": sequences}, indent=1) + "\n")
    plot(groups, out / "retrain.png")
    return {"out": str(out), "cpu": cpu, "sequences": {
        s["promote_metric"]: {"commit": s["commit"], "sequence": s["sequence"], "decisions": {
            r["drop"]: r["decision"] for r in s["runs"]}} for s in sequences}}


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
           "epochs": QUICK_EPOCHS if opts.quick else None,
           "promote_metric": opts.promote_metric}
    if opts.report:
        groups = logged(log, here["cpu"])
    else:
        rows = run_sequence(opts, log, key, here)
        groups = {**logged(log, here["cpu"]), opts.promote_metric: rows}
    print(json.dumps(write_results(groups, out)))


if __name__ == "__main__":
    main()
