"""`bertflow ui` after a real run, as a user sees it in headless Chromium: the Prefect UI shows the
flow run, its six task runs and its artifacts; the MLflow UI shows the registered model, its version
and both aliases. Screenshots land in test-artifacts/ui/."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from html import unescape
from pathlib import Path

import pytest

from flows.servers import start_uis, stop
from tests.fixtures import (FLOW_TASKS, free_port, run_bertflow, write_msr_files,
                            write_release_zip)

pytestmark = pytest.mark.slow

ARTIFACTS = ("mrpc-validation", "shard-validation", "tokenized-shards", "confusion-matrix",
             "model-promotion")
MODEL = "bertflow-mrpc"
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "ui"
# What it takes for headless Chromium to render these single-page apps, with nothing fetched
# from the internet and the page's timers run ahead by 15 s of virtual time.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--virtual-time-budget=15000"]


def chromium() -> str:
    """Debian's chromium; a missing browser skips the test on a workstation and fails it in CI."""
    path = shutil.which("chromium")
    if path:
        return path
    reason = "chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; .ci/run installs it")
    pytest.skip(reason)


def _chromium(url: str, *args: str) -> str:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        result = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                 *args, url], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"chromium on {url}: {result.stderr[-2000:]}"
    return result.stdout


def visible_text(html: str) -> str:
    """The page's text without scripts, styles and tags, whitespace collapsed."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S | re.I)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def chromium_dom(url: str) -> str:
    """The text a user reads at `url` once the app has rendered."""
    return visible_text(_chromium(url, "--dump-dom"))


def screenshot(url: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    _chromium(url, f"--screenshot={path}", "--window-size=1600,1200")
    assert path.stat().st_size > 20_000, f"{path} looks blank"  # a blank page is ~5 kB
    print(f"screenshot: {path}")
    return path


def label_in_the_words(msr: Path) -> Path:
    """Rewrite every pair's second sentence as one word repeated, `rose` for paraphrases and
    `lower` otherwise: a drop the tiny model learns in seconds, so it beats the majority baseline
    and is promoted to champion (on random pairs it collapses and stays challenger only)."""
    for name in ("msr_paraphrase_train.txt", "msr_paraphrase_test.txt"):
        header, *rows = (msr / name).read_text(encoding="utf-8").splitlines(keepends=True)
        for i, row in enumerate(rows):
            label, id1, id2, s1, s2 = row.rstrip("\n").split("\t")
            word = "rose" if label == "1" else "lower"
            rows[i] = "\t".join((label, id1, id2, s1, " ".join([word] * len(s2.split())))) + "\n"
        (msr / name).write_text(header + "".join(rows), encoding="utf-8")
    return msr


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> dict:
    """`bertflow run --json` on a generated drop and a 1-layer BERT: its summary, and its home."""
    chromium()  # skip (or fail in CI) before the run, not after it
    root = tmp_path_factory.mktemp("ui-run")
    msr = label_in_the_words(write_msr_files(root / "msr", train_rows=96, dev_every=3))
    config = root / "tiny.yaml"
    config.write_text("data:\n  shard_size: 8\n"
                      "  row_bounds: {train: [1, 100], dev: [1, 100], test: [1, 100]}\n")
    result = run_bertflow(["run", "--mrpc-source", str(msr), "--config", str(config),
                           "--checkpoint", str(write_release_zip(root / "tiny.zip")),
                           "--max-seq-length", "32", "--epochs", "10", "--batch-size", "4",
                           "--learning-rate", "3e-3", "--json"], root / "home", timeout_s=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["state"] == "Completed" and list(summary["tasks"]) == FLOW_TASKS
    assert summary["model"]["aliases"] == ["challenger", "champion"], summary["model"]
    return {**summary, "home": root / "home"}


@pytest.fixture(scope="module")
def uis(real_run) -> dict[str, str]:
    """Both servers over the run's home, as `bertflow ui` starts them, on free loopback ports."""
    prefect_port, mlflow_port = free_port(), free_port()
    servers = start_uis(real_run["home"], prefect_port, mlflow_port)
    try:
        yield {"prefect": f"http://127.0.0.1:{prefect_port}",
               "mlflow": f"http://127.0.0.1:{mlflow_port}"}
    finally:
        stop(servers)


def flow_run_name(prefect: str, flow_run_id: str) -> str:
    with urllib.request.urlopen(f"{prefect}/api/flow_runs/{flow_run_id}", timeout=30) as answer:
        return json.load(answer)["name"]


def test_prefect_ui_shows_the_flow_run_its_six_tasks_and_artifacts(real_run, uis):
    run_id = real_run["flow_run_id"]
    page = f"{uis['prefect']}/v2/runs/flow-run/{run_id}"
    header = [flow_run_name(uis["prefect"], run_id), "Completed", "finetune",
              f"{len(FLOW_TASKS)} Task runs"]

    task_runs = chromium_dom(f"{page}?tab=TaskRuns")
    for text in [*header, f"({len(FLOW_TASKS)} Completed)"]:
        assert text in task_runs, f"{text!r} not on the Task Runs tab: {task_runs[:2000]}"
    for stage in FLOW_TASKS:  # task runs are named `<task>-<3 hex digits>`
        assert re.search(rf"\b{stage}-[0-9a-f]{{3}}\b", task_runs), f"no {stage} task run shown"
    screenshot(f"{page}?tab=TaskRuns", SHOTS / "prefect-task-runs.png")

    artifacts = chromium_dom(f"{page}?tab=Artifacts")
    version = real_run["model"]["version"]
    for text in [*header, *ARTIFACTS, f"{MODEL} v{version}: promoted"]:
        assert text in artifacts, f"{text!r} not on the Artifacts tab: {artifacts[:2000]}"
    screenshot(f"{page}?tab=Artifacts", SHOTS / "prefect-artifacts.png")


def test_mlflow_ui_shows_the_registered_model_its_version_and_aliases(real_run, uis):
    version = real_run["model"]["version"]
    model_page = f"{uis['mlflow']}/#/models/{MODEL}"
    listing = chromium_dom(model_page)
    for text in (MODEL, f"Version {version}", "@ challenger", "@ champion"):
        assert text in listing, f"{text!r} not on the model page: {listing[:2000]}"
    screenshot(model_page, SHOTS / "mlflow-model.png")

    version_page = f"{model_page}/versions/{version}"
    detail = chromium_dom(version_page)
    for text in (f"Version {version}", "@ challenger", "@ champion", "Source Model : classifier",
                 real_run["model"]["decision"]):
        assert text in detail, f"{text!r} not on the version page: {detail[:2000]}"
    screenshot(version_page, SHOTS / "mlflow-model-version.png")
