"""Scheduled retraining as it runs in production: the weekly deployment from prefect.yaml on a
Prefect server and an MLflow server, both on a throwaway PostgreSQL, run by a process worker, over
a drop location that receives one drop after another:

    drop 1            -> v1 champion (against the majority-class predictor)
    drop 1 again      -> no-op: no new version
    drop 2 (more)     -> v2, decided as the bootstrap interval computed here says
    drop 3 (drifted)  -> blocked before training; champion untouched; a webhook is told
    drop 4 (renamed)  -> contract violation: the run fails; champion untouched; a webhook is told
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tasks.config import (DataConfig, ModelConfig, PipelineConfig, RegistryConfig, RowBounds,
                          TrainConfig)
from tasks.gate import metric_value
from tests.fixtures import write_release_zip
from tests.postgres import postgres, servers_on_postgres  # noqa: F401  (a fixture)
from tests.test_deploy import run_prefect

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
WEEKLY = "finetune/weekly-mrpc"
MODEL = "bertflow-mrpc"
HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
WORDS = ("the company said its shares were trading on monday after the report from analysts "
         "about sales in the third quarter").split()


def pair(rng: random.Random, label: str, words: int) -> tuple[str, str]:
    """Two sentences; the second says "rose" for a paraphrase (1), "lower" otherwise (0)."""
    a = " ".join(rng.choice(WORDS) for _ in range(words))
    cue = "rose" if label == "1" else "lower"
    return a, " ".join([cue, *(rng.choice(WORDS) for _ in range(words - 1)), cue])


def write_mrpc(folder: Path, rows: int, seed: int, labels=("0", "1"), words: int = 6,
               second_column: str = "#2 String") -> Path:
    """GLUE's MRPC train/dev/test.tsv of learnable pairs (ids unique per seed)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    header = HEADER.replace("#2 String", second_column)
    for split, n in (("train", rows), ("dev", 24), ("test", 12)):
        lines = [header if split != "test" else "index\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        for i in range(n):
            label = labels[i % len(labels)]
            a, b = pair(rng, label, words)
            first = str(i) if split == "test" else label
            lines.append(f"{first}\t{seed * 100000 + 2 * i}\t{seed * 100000 + 2 * i + 1}\t{a}\t{b}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


class Receiver:
    """A webhook receiver on 127.0.0.1: the JSON bodies POSTed to it."""

    def __init__(self):
        self.bodies: list[str] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                received.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def wait_for(self, text: str, timeout_s: float = 90) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [b for b in self.bodies if text in b]
            if found:
                return found[0]
            time.sleep(0.5)
        raise AssertionError(f"no webhook call mentioning {text!r}; got {self.bodies}")


def prefect(env: dict, *args: str, log: Path, timeout_s: float = 300) -> str:
    return run_prefect(env, args, log, timeout_s)


@pytest.fixture(scope="module")
def site(postgres, tmp_path_factory):  # noqa: F811  (the fixture)
    """Both servers on PostgreSQL, prefect.yaml deployed, a webhook receiver told of failures."""
    root = tmp_path_factory.mktemp("retrain")
    receiver = Receiver()
    with servers_on_postgres(postgres, root / "servers") as servers:
        env = {**servers.env, "PWD": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
        log = root / "command.log"
        prefect(env, "work-pool", "create", "bertflow", "--type", "process", log=log)
        prefect(env, "--no-prompt", "deploy", "--all", log=log)
        done = subprocess.run([str(Path(sys.executable).with_name("bertflow")), "notify",
                               "--webhook", receiver.url, "--allow-private-urls"],
                              env=env, cwd=root, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        yield {"root": root, "env": env, "servers": servers, "postgres": postgres,
               "receiver": receiver, "log": log}
    receiver.httpd.shutdown()


def weekly_cfg(site) -> PipelineConfig:
    root = site["root"]
    zip_path = root / "tiny.zip"
    if not zip_path.exists():
        write_release_zip(zip_path)
        write_mrpc(root / "eval-set", rows=4, seed=99)  # its dev.tsv is the pinned exam
    bounds = RowBounds(train=(1, 1000), dev=(1, 100), test=(1, 100))
    return PipelineConfig(
        home=str(root / "home"),
        data=DataConfig(drops=str(root / "drops"), checkpoint=str(zip_path), shard_size=16,
                        row_bounds=bounds),
        model=ModelConfig(max_seq_length=32),
        train=TrainConfig(epochs=10, batch_size=8, learning_rate=3e-3),
        registry=RegistryConfig(tracking_uri=site["servers"].mlflow_url,
                                eval_set=str(root / "eval-set"), bootstrap_resamples=1000))


def weekly_run(site) -> tuple[str, str]:
    """One on-demand run of the weekly deployment, picked up by a process worker: the flow
    run's id and final state."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    params = json.dumps({"cfg": weekly_cfg(site).model_dump(mode="json")})
    out = prefect(site["env"], "deployment", "run", WEEKLY, "--params", params, log=site["log"])
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
    prefect(site["env"], "worker", "start", "--pool", "bertflow", "--run-once",
            log=site["root"] / "worker.log", timeout_s=600)
    with temporary_settings(updates={PREFECT_API_URL: site["servers"].prefect_api_url}), \
            get_client(sync_client=True) as client:
        return flow_run_id, client.read_flow_run(flow_run_id).state.name


def registry(site) -> mlflow.MlflowClient:
    uri = site["servers"].mlflow_url
    return mlflow.MlflowClient(uri, registry_uri=uri)


def versions(site) -> dict[str, dict[str, str]]:
    return {str(v.version): v.tags for v in registry(site).search_model_versions(
        f"name = '{MODEL}'")}


def champion(site) -> str:
    return str(registry(site).get_registered_model(MODEL).aliases["champion"])


def last(site) -> dict[str, str]:
    tags = registry(site).get_registered_model(MODEL).tags
    return {k.removeprefix("bertflow.last."): v for k, v in tags.items()
            if k.startswith("bertflow.last.")}


def served_probabilities(site, version: str, frame: pd.DataFrame) -> np.ndarray:
    """P(paraphrase) of a version on the evaluation set, loaded from the registry as a user."""
    with_uri = site["servers"].mlflow_url
    mlflow.set_tracking_uri(with_uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}")
        answer = model.predict(frame.rename(columns={"#1 String": "text_a",
                                                     "#2 String": "text_b"})[["text_a", "text_b"]])
    finally:
        mlflow.set_tracking_uri(None)
    return answer[["probability_0", "probability_1"]].to_numpy()


def drop(site, name: str, **kwargs) -> None:
    """A new drop: written under a hidden name, then renamed into place (as a delivery should)."""
    drops = site["root"] / "drops"
    drops.mkdir(exist_ok=True)
    write_mrpc(drops / f".{name}", **kwargs).rename(drops / name)


@pytest.fixture(scope="module")
def week(site) -> dict:
    """The five runs, one after another, and what each left behind."""
    out = {}
    drop(site, "2026-11-02", rows=128, seed=1)
    out["v1"] = weekly_run(site), versions(site), champion(site)
    out["again"] = weekly_run(site), versions(site), champion(site), last(site)
    drop(site, "2026-11-09", rows=256, seed=2)
    out["v2"] = weekly_run(site), versions(site), champion(site), last(site)
    drop(site, "2026-11-16", rows=128, seed=3, labels=("1",))
    out["drifted"] = weekly_run(site), versions(site), champion(site), last(site)
    drop(site, "2026-11-23", rows=128, seed=4, second_column="#2 Sentence")
    out["renamed"] = weekly_run(site), versions(site), champion(site)
    return out


def test_drop_1_makes_the_first_champion(week):
    (_, state), tags, champ = week["v1"]
    assert state == "Completed"
    assert champ == "1" and tags["1"]["promotion_decision"] == "promoted"
    assert tags["1"]["drop"] == "2026-11-02"
    assert tags["1"]["compared_with"] == "majority-class predictor"
    assert float(tags["1"]["gate.ci_low"]) > 0


def test_the_same_drop_again_is_a_no_op(week):
    (_, state), tags, champ, outcome = week["again"]
    assert state == "Completed" and list(tags) == ["1"] and champ == "1"
    assert outcome["code"] == "no-op" and "2026-11-02" in outcome["reason"]


def test_drop_2_is_decided_as_the_bootstrap_interval_says(week, site):
    (_, state), tags, champ, outcome = week["v2"]
    assert state == "Completed" and set(tags) == {"1", "2"}
    v2 = tags["2"]
    assert v2["drop"] == "2026-11-09" and v2["compared_with"] == "champion v1"
    # the interval recomputed here, from both versions as served, on the pinned evaluation set
    frame = pd.read_csv(site["root"] / "eval-set" / "dev.tsv", sep="\t", dtype=str)
    truth = frame["Quality"].astype(int).to_numpy()
    new, old = served_probabilities(site, "2", frame), served_probabilities(site, "1", frame)
    rng = np.random.default_rng(int(v2["gate.seed"]))
    index = rng.integers(0, len(truth), (int(v2["gate.resamples"]), len(truth)))
    gains = [metric_value("f1", truth[i], new[i], ("0", "1"), 1)
             - metric_value("f1", truth[i], old[i], ("0", "1"), 1) for i in index]
    low, high = np.quantile(gains, [0.025, 0.975])
    assert (float(v2["gate.ci_low"]), float(v2["gate.ci_high"])) == pytest.approx((low, high),
                                                                                  abs=1e-9)
    delta = metric_value("f1", truth, new, ("0", "1"), 1) - metric_value("f1", truth, old,
                                                                         ("0", "1"), 1)
    expected = ("not-better" if delta <= 0 else "promoted" if low > 0 else "not-significant")
    assert v2["promotion_decision"] == expected == outcome["code"]
    assert champ == ("2" if expected == "promoted" else "1")


def test_a_drifted_drop_is_blocked_before_training(week, site):
    (flow_run_id, state), tags, champ, outcome = week["drifted"]
    assert state == "Completed"
    assert set(tags) == {"1", "2"} and champ == week["v2"][2]  # no version; champion untouched
    assert outcome["code"] == "blocked-by-drift" and "label_shift (block)" in outcome["reason"]
    run = registry(site).get_run(outcome["run_id"])
    assert run.data.tags["drop"] == "2026-11-16"
    files = {f.path for f in registry(site).list_artifacts(run.info.run_id, "drift")}
    assert files >= {"drift/drift.md", "drift/drift.png", "drift/drift.json"}
    body = json.loads(site["receiver"].wait_for("blocked-by-drift"))
    assert "label_shift" in json.dumps(body)


def test_a_renamed_column_fails_the_run_and_leaves_the_champion(week, site):
    (flow_run_id, state), tags, champ = week["renamed"]
    assert state == "Failed"
    assert set(tags) == {"1", "2"} and champ == week["v2"][2]
    assert flow_run_id in site["receiver"].wait_for(flow_run_id)


def test_both_servers_keep_their_state_in_postgresql(week, site):
    cluster = site["postgres"]
    assert cluster.rows("mlflow", "select count(*) from model_versions")[0][0] == 2
    runs = cluster.rows("prefect", "select count(*) from flow_run")[0][0]
    assert runs >= 5
