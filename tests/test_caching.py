"""Caches you can believe: a home damaged the ways users damage it heals on the next `bertflow run`
(exit 0, the damaged stage runs again, `bertflow predict` answers), and a cache key moves with the
code a stage runs, not with code it does not.

One home serves the module's tests in turn; each test damages it, reruns, and leaves it healthy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import free_port, run_bertflow
from tests.test_faults import BOUNDS_YAML, TINY_RUN, _mlflow_server

ROOT = Path(__file__).resolve().parents[1]
PAIRS = "the company said its shares rose\tshares rose on monday\nprofit beat\tsales fell\n"


@pytest.fixture(scope="module")
def home(tiny_sources, tmp_path_factory) -> Path:
    """A home after one complete run."""
    home = tmp_path_factory.mktemp("cache") / "home"
    result = bertflow_run(home, tiny_sources)
    assert result["state"] == "Completed"
    return home


def bertflow_run(home: Path, sources, *extra: str, command=None) -> dict:
    """`bertflow run --json` on the tiny fixture; the summary line (asserting exit 0)."""
    config = home.parent / "bounds.yaml"
    config.write_text(BOUNDS_YAML)
    args = ["run", "--source", sources.source, "--checkpoint", sources.checkpoint,
            *TINY_RUN, "--config", str(config), "--json", *extra]
    done = command(args, home) if command else run_bertflow(args, home)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def states(summary: dict) -> dict[str, str]:
    return {name: task["state"] for name, task in summary["tasks"].items()}


def assert_predicts(home: Path, *extra: str) -> None:
    """`bertflow predict` answers with the model the run registered (champion or challenger)."""
    done = run_bertflow(["predict", "--model-uri", "models:/bertflow-mrpc@challenger", *extra],
                        home, stdin=PAIRS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(done.stdout.strip().splitlines()) == 2


def test_deleted_models_and_shards_are_rebuilt_not_reported_cached(home, tiny_sources):
    for folder in ("models", "shards", "reports"):
        shutil.rmtree(home / folder)
    summary = bertflow_run(home, tiny_sources)
    got = states(summary)
    assert got["tokenize"] == got["train"] == "Completed", got
    assert any((home / "models").glob("train-*/model.keras"))
    assert any((home / "shards").glob("tokenize-*/manifest.json"))
    assert_predicts(home)


def test_a_flipped_byte_in_a_shard_reruns_tokenize(home, tiny_sources):
    shard = next((home / "shards").glob("tokenize-*/train-*.tfrecord"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    summary = bertflow_run(home, tiny_sources)
    assert states(summary)["tokenize"] == "Completed"
    assert states(summary)["download"] == "Cached"
    manifest = json.loads((shard.parent / "manifest.json").read_text())
    recorded = {s["tfrecord"]: s["tfrecord_sha256"] for s in manifest["splits"]["train"]["shards"]}
    from tasks.fingerprint import sha256_file
    assert sha256_file(shard) == recorded[shard.name]  # the damaged shard was rewritten
    assert_predicts(home)


def test_a_deleted_mlflow_store_is_registered_again(home, tiny_sources):
    shutil.rmtree(home / "mlflow")
    summary = bertflow_run(home, tiny_sources)
    assert states(summary)["train"] == "Cached"
    assert states(summary)["register"] == "Completed"
    assert summary["model"]["version"] == "1"
    assert_predicts(home)


def test_a_fresh_tracking_server_gets_the_model_without_training(home, tiny_sources, tmp_path):
    port = free_port()
    server = _mlflow_server(port, tmp_path / "server")
    try:
        uri = f"http://127.0.0.1:{port}"
        summary = bertflow_run(home, tiny_sources, "--tracking-uri", uri)
        assert states(summary)["train"] == "Cached"
        assert states(summary)["register"] == "Completed"
        assert_predicts(home, "--tracking-uri", uri)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_rerun_runs_a_stage_and_those_after_it_again(home, tiny_sources):
    summary = bertflow_run(home, tiny_sources, "--rerun", "evaluate")
    got = states(summary)
    assert [got[s] for s in ("download", "validate", "tokenize", "train")] == ["Cached"] * 4, got
    assert got["evaluate"] == got["register"] == "Completed", got


def test_cache_clear_drops_the_recorded_results_of_one_stage(home, tiny_sources):
    done = run_bertflow(["cache", "clear", "--stage", "register"], home)
    assert done.returncode == 0, done.stderr
    assert "dropped" in done.stdout
    got = states(bertflow_run(home, tiny_sources))
    assert got["train"] == "Cached" and got["register"] == "Completed", got


def _copied_checkout(tmp_path: Path) -> Path:
    """The project's packages copied, for a run with edited code (imports come from the copy)."""
    copy = tmp_path / "checkout"
    for package in ("flows", "tasks", "bert_core", "data_contracts"):
        shutil.copytree(ROOT / package, copy / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _run_in(copy: Path):
    def command(args: list[str], home: Path) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(copy))
        return subprocess.run([sys.executable, "-m", "flows.cli", *args, "--home", str(home)],
                              env=env, capture_output=True, text=True, timeout=600, cwd=copy)
    return command


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} no longer holds {old!r}"
    path.write_text(text.replace(old, new, 1))


def test_a_behaviour_change_in_bert_core_trains_again(home, tiny_sources, tmp_path):
    copy = _copied_checkout(tmp_path)
    # A different optimizer: weight decay 0.02 instead of google-research/bert's 0.01.
    _edit(copy / "bert_core" / "optimizer.py", "weight_decay_rate: float = 0.01",
          "weight_decay_rate: float = 0.02")
    got = states(bertflow_run(home, tiny_sources, command=_run_in(copy)))
    assert got["tokenize"] == "Cached" and got["train"] == "Completed", got


def test_a_change_to_registers_markdown_leaves_train_cached(home, tiny_sources, tmp_path):
    copy = _copied_checkout(tmp_path)
    _edit(copy / "tasks" / "promotion.py", '"""', '"""Edited. ')
    got = states(bertflow_run(home, tiny_sources, command=_run_in(copy)))
    assert got["train"] == got["evaluate"] == "Cached", got
    assert got["register"] == "Completed", got
