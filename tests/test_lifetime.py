"""Nothing a `bertflow` command starts outlives it, and an interrupted run is recorded as it
ended: the real console script on the tiny fixture, killed while starting, while training and
while waiting on a stalled download, with SIGKILL, SIGTERM (`kill`) and SIGINT (a terminal's
Ctrl-C, sent to the command's whole process group)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flows.prefect_api import TemporaryAPI, answers
from tests.fixtures import free_port, run_bertflow, write_msr_files

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc; the parent-death signal is Linux's")
BOUNDS = "row_bounds: {train: [1, 30000], dev: [1, 30000], test: [1, 30000]}"
# 5.5 steps an epoch on the tiny fixture; a backup every 5 steps, whatever the time between
LONG_TRAINING = f"data:\n  {BOUNDS}\ntrain:\n  save_every_steps: 5\n  save_min_seconds: 0\n"
TINY_RUN = ["--max-seq-length", "32", "--batch-size", "4"]
GONE = {"CRASHED", "CANCELLED"}


def launch(args: list[str], home: Path) -> subprocess.Popen:
    """`bertflow ARGS --home HOME` as a terminal starts a job: a process group of its own, Ctrl-C
    at its default (a suite started in the background inherits SIGINT ignored), no Prefect
    settings inherited; its output goes to HOME's sibling `bertflow.log`."""
    exe = Path(sys.executable).with_name("bertflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="3")
    log = (home.parent / "bertflow.log").open("a")
    return subprocess.Popen([str(exe), *args, "--home", str(home)], env=env, cwd=home.parent,
                            stdout=log, stderr=log, process_group=0,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def interrupt(process: subprocess.Popen, signum: int) -> int:
    """SIGINT to the group, as Ctrl-C does; other signals to the process, as `kill` does.
    Returns its exit code."""
    if signum == signal.SIGINT:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    return process.wait(timeout=120)


def _naming(pid: str, text: bytes) -> bool:
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False  # exited; only its parent's wait is missing
        return any(text in Path(f"/proc/{pid}/{part}").read_bytes()
                   for part in ("cmdline", "environ"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


def processes_naming(home: Path) -> list[str]:
    """Command lines of the live processes whose arguments or environment name `home`: what a
    `bertflow --home HOME` started (its Prefect server has PREFECT_HOME=HOME/prefect)."""
    text, me = str(home).encode(), str(os.getpid())
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if pid != me and _naming(pid, text):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            found.append(f"{pid}: {cmdline.decode(errors='replace')}")
    return found


def assert_none_survive(home: Path, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while (alive := processes_naming(home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"still running after the command ended: {alive}"


def wait_until(condition, process: subprocess.Popen, home: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, (home.parent / "bertflow.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def flow_runs(home: Path) -> list[tuple[str, str]]:
    """(flow name, state type) of every flow run in HOME's Prefect database, oldest first, as
    a Prefect API server over that database reports them."""
    api = TemporaryAPI({**os.environ, "PREFECT_HOME": str(home / "prefect")}).start()
    try:
        api.wait_until_up()
        runs = _post(f"{api.url}/flow_runs/filter", {"sort": "EXPECTED_START_TIME_ASC"})
        flows = {f["id"]: f["name"] for f in _post(f"{api.url}/flows/filter", {})}
    finally:
        api.stop()
    return [(flows[r["flow_id"]], r["state_type"]) for r in sorted(runs, key=lambda r: r["created"])]


def _post(url: str, body: dict) -> list[dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _server_started(home: Path) -> bool:
    return any("create_app" in p for p in processes_naming(home))


def _steps_logged(home: Path) -> int:
    logs = list((home / "training").glob("*/history.jsonl"))
    return sum(1 for line in logs[0].read_text().splitlines() if '"loss"' in line) if logs else 0


@pytest.fixture
def run_args(tiny_sources, tmp_path) -> list[str]:
    (tmp_path / "run.yaml").write_text(LONG_TRAINING)
    return ["run", "--source", tiny_sources.source, "--checkpoint",
            tiny_sources.checkpoint, *TINY_RUN, "--config", str(tmp_path / "run.yaml")]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT],
                         ids=["SIGKILL", "SIGTERM", "SIGINT"])
def test_a_run_killed_while_starting_leaves_no_process(run_args, tmp_path, signum):
    home = tmp_path / "home"
    process = launch([*run_args, "--epochs", "1"], home)
    wait_until(lambda: _server_started(home), process, home, timeout_s=120)

    assert interrupt(process, signum) != 0
    assert_none_survive(home)


@pytest.mark.slow
def test_a_run_interrupted_while_training_is_recorded_and_its_rerun_resumes(run_args, tmp_path):
    home = tmp_path / "home"
    args = [*run_args, "--epochs", "50", "--json"]  # 275 steps: ~3 s warm
    for signum in (signal.SIGINT, signal.SIGTERM):
        logged = _steps_logged(home)
        process = launch(args, home)
        wait_until(lambda: _steps_logged(home) >= logged + 10, process, home)

        assert interrupt(process, signum) != 0, signal.Signals(signum).name
        assert_none_survive(home)
        assert list((home / "training").glob("*/backup/*")), "the backup went"
    assert [state for _, state in flow_runs(home)] in ([a, b] for a in GONE for b in GONE)

    rerun = run_bertflow(args, home)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads(rerun.stdout.strip().splitlines()[-1])["state"] == "Completed"
    history = json.loads(next((home / "models").glob("*/history.json")).read_text())
    assert history["resumed_from_step"] >= 10  # from the last backup, not from step 0
    assert_none_survive(home)


@pytest.mark.slow
def test_a_validate_stopped_while_its_download_stalls_is_recorded_as_it_ended(loopback,
                                                                               tmp_path):
    msr = write_msr_files(tmp_path / "msr", train_rows=24000, dev_every=3)  # > 2 MiB: half of
    # it fills more than one of the downloader's 1 MiB reads before the server stalls
    for path in msr.iterdir():
        loopback.add(f"/msr/{path.name}", path.read_bytes())
    loopback.fail("/msr/msr_paraphrase_train.txt", "stall", "stall")
    (tmp_path / "bounds.yaml").write_text(f"data:\n  {BOUNDS}\n")
    home = tmp_path / "home"
    args = ["validate", "--source", loopback.url + "/msr", "--config",
            str(tmp_path / "bounds.yaml")]
    for signum in (signal.SIGTERM, signal.SIGKILL):
        process = launch(args, home)
        wait_until(lambda: any(p.stat().st_size for p in (home / "cache" / "tmp").glob("*.part")),
                   process, home)

        assert interrupt(process, signum) != 0, signal.Signals(signum).name
        assert_none_survive(home)
    # SIGKILL leaves the run Running: nothing is left to record how it ended
    assert flow_runs(home) == [("validate-data", "CRASHED"), ("validate-data", "RUNNING")]

    again = run_bertflow(args, home)  # no stall this time
    assert again.returncode == 0, again.stderr[-3000:]
    assert_none_survive(home)


@pytest.mark.slow
def test_bertflow_ui_killed_takes_both_servers_and_mlflows_workers_with_it(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    prefect_port, mlflow_port = free_port(), free_port()
    process = launch(["ui", "--prefect-port", str(prefect_port),
                      "--mlflow-port", str(mlflow_port)], home)
    wait_until(lambda: all(answers(url) for url in (
        f"http://127.0.0.1:{prefect_port}/api/health", f"http://127.0.0.1:{mlflow_port}/health")),
        process, home, timeout_s=180)
    assert any("mlflow/server" in p for p in processes_naming(home))  # mlflow's own uvicorn

    assert interrupt(process, signal.SIGKILL) != 0
    assert_none_survive(home)
