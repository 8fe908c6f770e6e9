"""README's "Scheduled runs" as a user does them: a local Prefect server, `prefect deploy --all`
with the checkout's prefect.yaml, and a process worker that runs the weekly fine-tune once on
demand over tiny generated fixtures. Every step is the real `prefect` command in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.options import TENSORFLOW_ENV
from flows.servers import prefect_command, stop, wait_until_up
from flows.summary import task_states
from tasks.config import ModelConfig, PipelineConfig, TrainConfig
from tasks.mlflow_store import tracking_uri
from tests.fixtures import FLOW_TASKS, free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
WEEKLY = "finetune/weekly-mrpc"


@dataclass(frozen=True)
class Server:
    url: str  # the API: http://127.0.0.1:<port>/api
    home: Path  # PREFECT_HOME of the server and of every command; command logs go here too
    env: dict[str, str]  # the environment of the commands run against it


def quiet_env(home: Path) -> dict[str, str]:
    """The caller's environment without its Prefect settings, with PREFECT_HOME at `home`, no
    telemetry, and PWD at the checkout: prefect.yaml's pull step reads {{ $PWD }} when deploying,
    and a subprocess's cwd does not update that variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               MLFLOW_DISABLE_TELEMETRY="true", GX_ANALYTICS_ENABLED="false",
               TF_CPP_MIN_LOG_LEVEL="2", PWD=str(ROOT))
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """`prefect server start` on a free port with its own home, answering; always stopped."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = quiet_env(home)
    with (home / "server.log").open("w") as log:
        process = subprocess.Popen(prefect_command(port), env=env, cwd=home, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            wait_until_up(f"{url}/health")
            yield Server(url, home, {**env, "PREFECT_API_URL": url})
        finally:
            stop([process])  # terminate, wait 20 s, kill


def run_prefect(env: dict[str, str], args: tuple[str, ...], log: Path,
                timeout_s: float = 180) -> str:
    """`prefect <args>` run from the checkout with `env`; its output once it succeeded. Output
    goes to `log`: a worker's flow-run process (its own session) would hold a pipe."""
    with log.open("w") as out:
        process = subprocess.Popen([PREFECT, *args], env=env, cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop([process])
            pytest.fail(f"prefect {' '.join(args)} ran past {timeout_s:.0f} s:\n"
                        f"{log.read_text()[-4000:]}")
    output = log.read_text()
    assert process.returncode == 0, f"prefect {' '.join(args)}:\n{output[-4000:]}"
    return output


def prefect(server: Server, *args: str, timeout_s: float = 180) -> str:
    """`prefect <args>` against `server` (run_prefect)."""
    return run_prefect(server.env, args, server.home / "command.log", timeout_s)


def api(server: Server):
    """In-process Prefect client calls (and flows.summary's) go to `server` within this block."""
    return temporary_settings(updates={PREFECT_API_URL: server.url})


@pytest.fixture(scope="module")
def deployed(server) -> str:
    """The work pool created and every deployment in prefect.yaml deployed, with no prompt;
    the deploy command's output. Deploying leaves prefect.yaml as it was."""
    spec = (ROOT / "prefect.yaml").read_bytes()
    prefect(server, "work-pool", "create", "bertflow", "--type", "process")
    output = prefect(server, "--no-prompt", "deploy", "--all")
    assert (ROOT / "prefect.yaml").read_bytes() == spec
    return output


def test_deploy_all_creates_the_weekly_and_the_on_demand_deployments(server, deployed):
    with api(server), get_client(sync_client=True) as client:
        weekly = client.read_deployment_by_name(WEEKLY)
        sweep = client.read_deployment_by_name("sweep/sweep")
        score = client.read_deployment_by_name("score/score")
        per_task = {name: client.read_deployment_by_name(f"finetune/{name}")
                    for name in ("cola", "sst2", "rte", "stsb", "mnli")}

    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in weekly.schedules] == \
        [("0 3 * * 1", "UTC", True)]
    assert sweep.schedules == score.schedules == [] and \
        all(d.schedules == [] for d in per_task.values())
    assert weekly.work_pool_name == sweep.work_pool_name == score.work_pool_name == "bertflow"
    assert weekly.parameters == {"cfg": {"home": ".bertflow", "task": {"name": "mrpc"}}}
    assert sweep.parameters == {"cfg": {"home": ".bertflow"}}
    assert score.parameters["cfg"]["model_uri"] is None  # the champion, looked up per run
    assert {name: d.parameters["cfg"]["task"]["name"] for name, d in per_task.items()} == \
        {name: name for name in per_task}
    for deployment in (weekly, sweep, score, *per_task.values()):  # run from this checkout
        assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {
            "directory": str(ROOT)}}]
        # with the environment `bertflow run` gives TensorFlow (its pooled CPU allocator)
        assert deployment.job_variables == {"env": TENSORFLOW_ENV}
    listed = prefect(server, "deployment", "ls")
    assert WEEKLY in listed and "sweep/sweep" in listed and "score/score" in listed


def test_the_weekly_deployment_runs_one_at_a_time(server, deployed):
    """Limit 1, ENQUEUE: while a run holds the slot, a second one a worker claims (proposes
    Pending, as `prefect worker` does) is sent back to wait, AwaitingConcurrencySlot."""
    from prefect.states import Cancelled, Pending

    with api(server), get_client(sync_client=True) as client:
        weekly = client.read_deployment_by_name(WEEKLY)
        assert weekly.global_concurrency_limit.limit == 1
        assert weekly.concurrency_options.collision_strategy == "ENQUEUE"
        runs = [client.create_flow_run_from_deployment(weekly.id) for _ in range(2)]
        try:
            first, second = (client.set_flow_run_state(run.id, Pending()) for run in runs)
            assert (first.status.value, first.state.name) == ("ACCEPT", "Pending")
            assert (second.status.value, second.state.type.value, second.state.name) == \
                ("REJECT", "SCHEDULED", "AwaitingConcurrencySlot")
        finally:  # a worker started later must find no run of these two to claim
            for run in runs:
                client.set_flow_run_state(run.id, Cancelled(), force=True)
                client.delete_flow_run(run.id)


def tiny_run(tiny_sources, home: Path) -> PipelineConfig:
    return PipelineConfig(home=str(home), data=tiny_sources, model=ModelConfig(max_seq_length=32),
                          train=TrainConfig(epochs=1, batch_size=4))


def run_on_demand(server: Server, cfg: PipelineConfig) -> str:
    """`prefect deployment run` of the weekly deployment with `cfg`; the new flow run's id."""
    params = json.dumps({"cfg": cfg.model_dump(mode="json")})
    output = prefect(server, "deployment", "run", WEEKLY, "--params", params)
    return re.search(r"UUID: ([0-9a-f-]{36})", output).group(1)


def test_a_process_worker_runs_the_weekly_deployment_once_on_demand(server, deployed,
                                                                    tiny_sources, tmp_path):
    cfg = tiny_run(tiny_sources, tmp_path / "home")
    flow_run_id = run_on_demand(server, cfg)

    worker_log = prefect(server, "worker", "start", "--pool", "bertflow", "--run-once",
                         timeout_s=300)

    with api(server), get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        weekly = client.read_deployment_by_name(WEEKLY)
        tasks = task_states(flow_run_id)
    assert flow_run.deployment_id == weekly.id
    assert flow_run.state.name == "Completed", worker_log[-4000:]
    assert {name: task["state"] for name, task in tasks.items()} == \
        dict.fromkeys(FLOW_TASKS, "Completed")
    store = mlflow.MlflowClient(tracking_uri(cfg.registry, Path(cfg.home)))
    # str(): the SQLite store answers version 1 here as an int, elsewhere as "1"
    assert str(store.get_model_version_by_alias("bertflow-mrpc", "challenger").version) == "1"
    assert [str(v.version) for v in store.search_model_versions("name='bertflow-mrpc'")] == ["1"]
