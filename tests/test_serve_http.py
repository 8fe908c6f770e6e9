"""The registered champion behind `mlflow models serve`, asked over real HTTP as a client would:
raw text in, label names, every class's probability and the answering version out, the same
answers as the model loaded in process; bad requests refused with a 4xx that says why, the server
answering the next good one; and 2,000 requests from 8 threads at once, none lost or wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from flows import children
from tasks.config import RegistryConfig
from tasks.mlflow_store import open_store, using_tracking_uri
from tasks.promotion import register_and_promote
from tasks.register import log_training_run
from tasks.serving import for_task_name
from tests.fixtures import free_port
from tests.served_models import decided, eval_texts, write_report, write_trained

MODELS = {"rte": (("entailment", "not_entailment"), "accuracy"), "stsb": ((), "pearson")}
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "serve"
LOAD_REQUESTS, LOAD_THREADS = 2000, 8


class ModelServer:
    """`mlflow models serve` of one registered model, under the guard that ends it with us."""

    def __init__(self, model_uri: str, tracking_uri: str, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        bin_dir = str(Path(sys.executable).parent)  # it execs uvicorn from the venv
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "TF_CPP_MIN_LOG_LEVEL": "3",
               "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        command = [str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", model_uri,
                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port)]
        self.log = log
        with log.open("w") as out:
            self.process = children.start(command, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited:\n{self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"no /ping in {timeout_s}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        children.stop(self.process, timeout_s=10)


def invoke(client, url: str, columns: list[str], rows: list) -> httpx.Response:
    return client.post(f"{url}/invocations", timeout=60,
                       json={"dataframe_split": {"columns": columns, "data": rows}})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store holding a champion per task in MODELS, and its tracking URI."""
    root = tmp_path_factory.mktemp("serve")
    home = root / "home"
    for task, (labels, metric) in MODELS.items():
        trained = write_trained(root / task / "model", task, labels, scale=1.0, gain=30.0)
        report = write_report(root / task / "report", {metric: 0.7})
        cfg = for_task_name(RegistryConfig(), task)
        client, experiment_id = open_store(cfg, home)
        run_id = log_training_run(client, experiment_id, trained, report, {}, {}, [])
        first = decided("promoted", 0.7, metric=metric)
        assert register_and_promote(client, run_id, cfg, lambda number: first).promoted
    return {"uri": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}", "root": root}


@pytest.fixture(scope="module")
def servers(store):
    """One server per task's champion, started together, stopped whatever the tests did."""
    started = {}
    try:
        for task in MODELS:
            started[task] = ModelServer(f"models:/bertflow-{task}@champion", store["uri"],
                                        store["root"] / f"{task}-serve.log")
        for server in started.values():
            server.wait_ready()
        yield {task: server.url for task, server in started.items()}
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def in_process(store):
    """The champions loaded in this process, as any MLflow user loads them."""
    with using_tracking_uri(store["uri"]):
        return {task: mlflow.pyfunc.load_model(f"models:/bertflow-{task}@champion")
                for task in MODELS}


@pytest.fixture(scope="module")
def pairs() -> list[list[str]]:
    return eval_texts(40, seed=3)[["text_a", "text_b"]].values.tolist()


def served_rows(response: httpx.Response) -> pd.DataFrame:
    assert response.status_code == 200, response.text[-2000:]
    return pd.DataFrame(response.json()["predictions"])


def test_raw_text_in_label_names_probabilities_and_version_out(servers, in_process, pairs):
    with httpx.Client() as client:
        answer = served_rows(invoke(client, servers["rte"], ["text_a", "text_b"], pairs))
    expected = in_process["rte"].predict(pd.DataFrame(pairs, columns=["text_a", "text_b"]))
    assert list(answer.columns) == ["label", "probability_entailment",
                                    "probability_not_entailment", "probability", "model_version"]
    assert set(answer["model_version"]) == {"bertflow-rte/1"}
    assert list(answer["label"]) == list(expected["label"])
    assert answer["label"].nunique() == 2  # the texts reach the model: both classes answered
    probabilities = answer[["probability_entailment", "probability_not_entailment"]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(probabilities, expected[["probability_entailment",
                                                        "probability_not_entailment"]],
                               rtol=0, atol=1e-6)


def test_a_regression_model_answers_a_score(servers, in_process, pairs):
    with httpx.Client() as client:
        answer = served_rows(invoke(client, servers["stsb"], ["text_a", "text_b"], pairs[:5]))
    expected = in_process["stsb"].predict(pd.DataFrame(pairs[:5], columns=["text_a", "text_b"]))
    assert list(answer.columns) == ["score", "model_version"]
    assert set(answer["model_version"]) == {"bertflow-stsb/1"}
    np.testing.assert_allclose(answer["score"], expected["score"], rtol=0, atol=1e-6)
    assert answer["score"].nunique() == 5


@pytest.mark.parametrize("columns,rows,named", [
    (["text_b"], [["shares rose"]], "text_a"),
    (["text_a", "text_b"], [["shares rose", "a"], [None, "b"]], "text_a"),
    (["text_a", "text_b"], [[3, "shares rose"]], "text_a"),
    (["text_a", "text_b"], [], "empty batch"),
    (["text_a", "text_b"], "too many", "max_batch_rows"),
], ids=["no-text_a", "null-text", "number-as-text", "empty-batch", "too-many-rows"])
def test_a_bad_request_is_refused_saying_why(servers, in_process, pairs, columns, rows, named):
    limit = in_process["rte"].unwrap_python_model().max_batch_rows
    rows = [pairs[0]] * (limit + 1) if rows == "too many" else rows
    with httpx.Client() as client:
        refused = invoke(client, servers["rte"], columns, rows)
        assert 400 <= refused.status_code < 500, (refused.status_code, refused.text[-2000:])
        message = refused.json()["message"]
        assert named in message and "Traceback" not in message
        after = served_rows(invoke(client, servers["rte"], ["text_a", "text_b"], pairs[:2]))
        assert len(after) == 2
    if named == "max_batch_rows":
        assert f"{limit + 1} rows" in message and str(limit) in message


def test_2000_requests_from_8_threads_are_all_answered_right(servers, in_process, pairs):
    expected = in_process["rte"].predict(pd.DataFrame(pairs, columns=["text_a", "text_b"]))
    local, clients = threading.local(), []

    def ask(i: int) -> tuple[int, float, int, dict]:
        if not hasattr(local, "client"):  # one keep-alive connection per thread
            local.client = httpx.Client()
            clients.append(local.client)
        start = time.perf_counter()
        response = invoke(local.client, servers["rte"], ["text_a", "text_b"],
                          [pairs[i % len(pairs)]])
        return i, time.perf_counter() - start, response.status_code, response.json()

    try:
        with ThreadPoolExecutor(LOAD_THREADS) as pool:
            results = list(pool.map(ask, range(LOAD_REQUESTS)))
    finally:
        for client in clients:
            client.close()
    assert [status for _, _, status, _ in results] == [200] * LOAD_REQUESTS
    wrong = [i for i, _, _, body in results
             if body["predictions"][0]["label"] != expected["label"][i % len(pairs)]
             or abs(body["predictions"][0]["probability"]
                    - expected["probability"][i % len(pairs)]) > 1e-6]
    assert wrong == []
    latencies = np.array([seconds for _, seconds, _, _ in results]) * 1e3
    figures = {"requests": LOAD_REQUESTS, "threads": LOAD_THREADS, "rows_per_request": 1,
               "p50_ms": round(float(np.percentile(latencies, 50)), 2),
               "p99_ms": round(float(np.percentile(latencies, 99)), 2),
               "max_ms": round(float(latencies.max()), 2)}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nserved {LOAD_REQUESTS} requests from {LOAD_THREADS} threads: "
          f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms")
