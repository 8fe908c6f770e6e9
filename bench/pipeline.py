"""The whole flow cold, then warm (everything cached), as `bertflow run --json` in a fresh home
on the real MRPC and MiniLM-L3 served over loopback from ../shared.

    per stage      wall seconds of each task, cold and warm
    Prefect        overhead = the flow run's wall time minus the sum of its tasks' (orchestration,
                   result persistence, cache lookups); the process's own start-up (imports, the
                   temporary Prefect server) is reported beside it
    warm / cold    the whole command's wall time, and the flow run's

Targets: warm <= 0.1x cold and <= 20 s; Prefect overhead <= 5% of the cold run.
Prints a table; the last line is one JSON object with the figures.

    python bench/pipeline.py [--quick] [--shared ../shared] [--epochs 3]
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # run as a script: `bench` (for bench.accuracy) from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import json
import tempfile
from pathlib import Path

from bench.accuracy import ROOT, bertflow_run, loopback, served_sources


def overhead(summary: dict) -> float:
    return summary["seconds"] - sum(t["seconds"] for t in summary["tasks"].values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="0.2 epoch")
    opts = parser.parse_args()
    epochs = 0.2 if opts.quick else opts.epochs
    home = Path(tempfile.mkdtemp(prefix="bertflow-pipeline-"))
    with loopback(opts.shared) as base:
        args = ["--home", str(home), *served_sources(opts.shared, base), "--epochs", str(epochs)]
        cold, warm = bertflow_run(args), bertflow_run(args)
    lines = ["| stage | cold s | warm s | warm state |", "|---|---:|---:|---|"]
    for name, task in cold["tasks"].items():
        lines.append(f"| {name} | {task['seconds']:.2f} | {warm['tasks'][name]['seconds']:.2f} | "
                     f"{warm['tasks'][name]['state']} |")
    figures = {
        "epochs": epochs,
        "cold_command_s": cold["wall_seconds"], "warm_command_s": warm["wall_seconds"],
        "cold_flow_s": cold["seconds"], "warm_flow_s": warm["seconds"],
        "warm_over_cold_command": warm["wall_seconds"] / cold["wall_seconds"],
        "warm_over_cold_flow": warm["seconds"] / cold["seconds"],
        "prefect_overhead_cold_s": overhead(cold),
        "prefect_overhead_share_cold": overhead(cold) / cold["seconds"],
        "process_startup_cold_s": cold["wall_seconds"] - cold["seconds"],
        "warm_all_cached": all(t["state"] == "Cached" for t in warm["tasks"].values()),
        "stages": {n: {"cold_s": t["seconds"], "warm_s": warm["tasks"][n]["seconds"],
                       "warm_state": warm["tasks"][n]["state"]} for n, t in cold["tasks"].items()},
    }
    lines += ["", "| figure | value | target |", "|---|---:|---|",
              f"| whole command, cold / warm s | {cold['wall_seconds']:.1f} / "
              f"{warm['wall_seconds']:.1f} | warm <= 20 s |",
              f"| warm / cold, whole command | {figures['warm_over_cold_command']:.3f} | <= 0.1 |",
              f"| warm / cold, flow run | {figures['warm_over_cold_flow']:.3f} | <= 0.1 |",
              f"| Prefect overhead, cold | {overhead(cold):.2f} s = "
              f"{figures['prefect_overhead_share_cold']:.1%} of the flow | <= 5% |",
              f"| process start-up (imports, temporary Prefect server), cold | "
              f"{figures['process_startup_cold_s']:.1f} s | - |"]
    print("\n".join(lines))
    if not opts.quick:
        (ROOT / "bench" / "results" / "pipeline.md").write_text("\n".join(lines) + "\n")
        (ROOT / "bench" / "results" / "pipeline.json").write_text(json.dumps(figures) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
