"""Faults a pipeline run unattended must survive, each injected for real: the tracking server down
during register, two runs at once on one home, a disk that refuses writes while shards are
written, and a process killed in the middle of a download."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from flows.finetune import finetune
from flows.summary import summarize
from tasks.config import ModelConfig, PipelineConfig, RowBounds, TrainConfig
from tests.fixtures import STAGES, free_port, run_bertflow, write_msr_files

BOUNDS = RowBounds(train=(1, 100), dev=(1, 100), test=(1, 100))
BOUNDS_YAML = "data:\n  row_bounds: {train: [1, 100], dev: [1, 100], test: [1, 100]}\n"
TINY_RUN = ["--max-seq-length", "32", "--epochs", "1", "--batch-size", "4"]


def _mlflow_server(port: int, root: Path) -> subprocess.Popen:
    """A real MLflow tracking server (SQLite, one worker) on 127.0.0.1:`port`, answering."""
    root.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, cwd=root,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            assert server.poll() is None, "mlflow server exited"
            time.sleep(0.5)
    server.kill()
    raise TimeoutError("mlflow server did not start")


@pytest.mark.usefixtures("prefect_api")
def test_tracking_server_down_fails_before_training_then_a_rerun_registers(
        tiny_sources, tmp_path, monkeypatch):
    """The gate needs the registry's champion: with the tracking server down, the run fails
    (after Prefect's retries) before it trains, naming the server; once it is up, it runs."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # Prefect's retries, not MLflow's
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    cfg = PipelineConfig(home=str(tmp_path / "home"), data=tiny_sources,
                         model=ModelConfig(max_seq_length=32),
                         train=TrainConfig(epochs=1, batch_size=4),
                         registry={"tracking_uri": uri})

    down = summarize(finetune(cfg, return_state=True), cfg)

    assert down["state"] == "Failed"
    assert {k: v["state"] for k, v in down["tasks"].items()}["champion"] == "Failed"
    assert "train" not in down["tasks"]
    assert uri in down["error"]
    assert not list((tmp_path / "home").glob("models/*/model.keras"))  # nothing trained

    server = _mlflow_server(port, tmp_path / "server")
    try:
        up = summarize(finetune(cfg, return_state=True), cfg)
        assert up["state"] == "Completed", up.get("error")
        states = {k: v["state"] for k, v in up["tasks"].items()}
        assert states["download"] == "Cached"
        assert states["train"] == states["register"] == "Completed", states
        version = mlflow.MlflowClient(uri).get_model_version("bertflow-mrpc", "1")
        assert version.run_id == up["model"]["run_id"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_two_runs_at_once_on_one_home_both_finish_and_share_the_cache(tiny_sources, tmp_path):
    home = tmp_path / "home"
    (tmp_path / "bounds.yaml").write_text(BOUNDS_YAML)
    args = ["run", "--source", tiny_sources.source,
            "--checkpoint", tiny_sources.checkpoint,
            *TINY_RUN, "--config", str(tmp_path / "bounds.yaml"), "--json"]
    exe = Path(sys.executable).with_name("bertflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="3")
    runs = [subprocess.Popen([str(exe), *args, "--home", str(home)], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["state"] == "Completed"
    assert len(list((home / "models").iterdir())) == 1  # one model folder, whole
    assert len(list((home / "shards").iterdir())) == 1

    third = run_bertflow(args, home)
    assert third.returncode == 0, third.stderr[-3000:]
    summary = json.loads(third.stdout.strip().splitlines()[-1])
    states = {name: task["state"] for name, task in summary["tasks"].items()}
    assert {states[name] for name in STAGES if name in states} == {"Cached"}
    # what changes between runs is looked up again: the newest drop, the champion
    assert states["find-drop"] == states["champion"] == "Completed"


WRITE_SHARDS = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    from tasks.config import DataConfig, ModelConfig
    from tasks.download import RawData
    from tasks.tokenize import tokenize_splits
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[4]), int(sys.argv[4])))
    tokenize_splits(RawData.model_validate_json(Path(sys.argv[1]).read_text()),
                    DataConfig.model_validate_json(sys.argv[2]), ModelConfig(max_seq_length=32),
                    Path(sys.argv[3]))
""")


def test_a_disk_write_failure_while_writing_shards_leaves_nothing_to_read(tiny_sources, tmp_path):
    from tasks.download import download_data
    from tasks.tokenize import tokenize_splits
    from tasks.validate import validate_shard_splits

    home = tmp_path / "home"
    raw = download_data(tiny_sources, home)
    (tmp_path / "raw.json").write_text(raw.model_dump_json())
    failed = subprocess.run(
        [sys.executable, "-c", WRITE_SHARDS, str(tmp_path / "raw.json"),
         tiny_sources.model_dump_json(), str(home), "2000"],  # no file may grow past 2 kB
        capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0
    assert "File too large" in failed.stderr or "EFBIG" in failed.stderr
    assert not (home / "shards").exists() or list((home / "shards").iterdir()) == []

    shards = tokenize_splits(raw, tiny_sources, ModelConfig(max_seq_length=32), home)
    assert [p.name for p in (home / "shards").iterdir()] == [Path(shards.shard_dir).name]
    assert all(r.success for r in validate_shard_splits(Path(shards.shard_dir), raw))
    manifest = json.loads(shards.manifest.read_text())
    for entry in manifest["splits"].values():
        for shard in entry["shards"]:
            data = (Path(shards.shard_dir) / shard["parquet"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == shard["parquet_sha256"]


def test_a_process_killed_mid_download_leaves_the_cache_clean_for_the_next_run(loopback,
                                                                                tmp_path):
    msr = write_msr_files(tmp_path / "msr", train_rows=24000, dev_every=3)  # > 2 MiB: half of
    # it fills more than one of the downloader's 1 MiB reads before the server stalls
    for path in msr.iterdir():
        loopback.add(f"/msr/{path.name}", path.read_bytes())
    loopback.fail("/msr/msr_paraphrase_train.txt", "stall")
    (tmp_path / "bounds.yaml").write_text(BOUNDS_YAML.replace("100]", "30000]"))
    home = tmp_path / "home"
    args = ["validate", "--source", loopback.url + "/msr", "--config",
            str(tmp_path / "bounds.yaml"), "--home", str(home)]
    exe = Path(sys.executable).with_name("bertflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    log = (tmp_path / "killed.log").open("w")
    process = subprocess.Popen([str(exe), *args], env=env, cwd=tmp_path, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 300
        while not any(p.stat().st_size for p in (home / "cache" / "tmp").glob("*.part")):
            assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not list((home / "cache" / "blobs").glob("*")) or all(
        hashlib.sha256(b.read_bytes()).hexdigest() == b.name
        for b in (home / "cache" / "blobs").iterdir())

    again = run_bertflow(args[:-2], home)  # no stall this time
    assert again.returncode == 0, again.stderr[-3000:]
    blobs = list((home / "cache" / "blobs").iterdir())
    assert len(blobs) == 3
    assert all(hashlib.sha256(b.read_bytes()).hexdigest() == b.name for b in blobs)
