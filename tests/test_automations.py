"""`bertflow notify` against a real `prefect server start` (its event and automation services
on, as by default) and a webhook receiver on 127.0.0.1: a failing run of a bertflow deployment,
and the retrain outcomes a person must look at, reach the webhook; the others do not."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from typer.testing import CliRunner

from flows.automations import NEEDS_A_LOOK, RUN_FAILED, ensure_notifications
from flows.cli import app
from flows.servers import stop
from tests.test_deploy import Server, api, server  # noqa: F401 - `server` is a fixture

pytestmark = pytest.mark.slow
BERTFLOW = str(Path(sys.executable).with_name("bertflow"))
PREFECT = str(Path(sys.executable).with_name("prefect"))
WAIT_S = 60  # event -> trigger -> webhook, on a busy machine

RETRAIN_CHECK = '''
from prefect import flow

from flows.automations import emit_outcome


@flow(name="retrain-check")
def retrain_check():
    emit_outcome("promoted", "bertflow-tiny", "3", "dev accuracy 0.81 > 0.79", {"metric": "0.81"})
    emit_outcome("blocked-by-drift", "bertflow-tiny", None, "sentence length drifted",
                 {"check": "length", "psi": "0.41"})
    raise RuntimeError("the drop in data/drops/2024-06 is unreadable")
'''


class Receiver:
    """A webhook on 127.0.0.1: records each POST as (path, JSON body)."""

    def __init__(self):
        self.posts: list[tuple[str, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.posts.append((self.path, json.loads(body)))
                self.send_response(204)
                self.end_headers()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def wait_for(self, wanted: Callable[[dict], bool], timeout_s: float = WAIT_S) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [body for _, body in self.posts if wanted(body)]
            if found:
                return found[0]
            time.sleep(0.5)
        pytest.fail(f"no such POST within {timeout_s} s (does the server run its triggers and "
                    f"actions services?); received: {self.posts}")

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.stop()


def run(server: Server, *argv: str, cwd: Path,
        timeout_s: float = 120) -> subprocess.CompletedProcess:
    """A command against `server`, with its environment; killed (and the test failed) if it
    hangs."""
    process = subprocess.Popen(argv, env=server.env, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop([process])
        pytest.fail(f"{' '.join(argv)} ran past {timeout_s:.0f} s")
    return subprocess.CompletedProcess(argv, process.returncode, output)


@pytest.fixture(scope="module")
def notified(server, receiver, tmp_path_factory) -> list[str]:
    """`bertflow notify` run, then run again (in process) with the webhook moved to /hook:
    the ids the second run answers."""
    first = run(server, BERTFLOW, "notify", "--webhook", f"{receiver.url}/first",
                "--allow-private-urls", cwd=tmp_path_factory.mktemp("notify"))
    assert first.returncode == 0, first.stdout
    assert RUN_FAILED in first.stdout and NEEDS_A_LOOK in first.stdout
    with api(server):
        return ensure_notifications(f"{receiver.url}/hook", allow_private_urls=True)


@pytest.fixture(scope="module")
def failed_run(server, notified, tmp_path_factory):
    """A flow run of a deployment tagged bertflow, from a folder of its own, that emits two
    outcomes and raises; run as a worker runs it (`prefect flow-run execute`). Its flow run."""
    folder = tmp_path_factory.mktemp("retrain-check")
    (folder / "retrain_check.py").write_text(RETRAIN_CHECK)
    with api(server), get_client(sync_client=True) as client:
        deployment_id = client.create_deployment(
            flow_id=client.create_flow_from_name("retrain-check"), name="tiny",
            entrypoint="retrain_check.py:retrain_check", tags=["bertflow"],
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {
                "directory": str(folder)}}])
        flow_run = client.create_flow_run_from_deployment(deployment_id)
    executed = run(server, PREFECT, "flow-run", "execute", str(flow_run.id), cwd=folder)
    with api(server), get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run.id)
    assert flow_run.state.name == "Failed", executed.stdout[-4000:]
    return flow_run


def test_a_failed_run_of_a_bertflow_deployment_posts_its_run_state_and_message(receiver,
                                                                               failed_run):
    body = receiver.wait_for(lambda body: body.get("flow_run_id") == str(failed_run.id))
    assert body["text"] == (f"bertflow: retrain-check/tiny run {failed_run.name} Failed: "
                            f"{body['message']}")
    assert body["flow_run"] == failed_run.name
    assert body["deployment"] == "retrain-check/tiny"
    assert body["state"] == "Failed"
    assert "the drop in data/drops/2024-06 is unreadable" in body["message"]


def test_a_retrain_blocked_by_drift_posts_its_code_model_and_reason(receiver, failed_run):
    body = receiver.wait_for(lambda body: body.get("code") == "blocked-by-drift")
    assert body == {"text": "bertflow: bertflow-tiny blocked-by-drift: sentence length drifted",
                    "event": "bertflow.retrain.blocked-by-drift", "code": "blocked-by-drift",
                    "model": "bertflow-tiny", "version": None,
                    "reason": "sentence length drifted",
                    "details": {"check": "length", "psi": "0.41"},
                    "flow_run": failed_run.name}  # the run it was emitted in, related


def test_a_promotion_posts_nothing(receiver, failed_run):
    receiver.wait_for(lambda body: body.get("code") == "blocked-by-drift")  # emitted after it
    receiver.wait_for(lambda body: body.get("flow_run_id") == str(failed_run.id))
    time.sleep(3)
    assert [body for _, body in receiver.posts if body.get("code") == "promoted"] == []


def test_notify_twice_leaves_one_block_and_one_automation_of_each_kind(server, receiver,
                                                                       notified, failed_run):
    with api(server), get_client(sync_client=True) as client:
        automations = client.read_automations()
        webhooks = client.read_block_documents_by_type("webhook")
    assert sorted(a.name for a in automations) == sorted([RUN_FAILED, NEEDS_A_LOOK])
    assert sorted(str(a.id) for a in automations) == sorted(notified)
    assert [block.name for block in webhooks] == ["bertflow-notify"]
    receiver.wait_for(lambda body: body.get("code") == "blocked-by-drift")
    # the second URL took the first's place
    assert {path for path, _ in receiver.posts} == {"/hook"}


def test_notify_refuses_a_loopback_webhook_unless_allowed():
    result = CliRunner().invoke(app, ["notify", "--webhook", "http://127.0.0.1:9/hook"])
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())  # rich's error box
    assert result.exit_code == 2, result.output
    assert "http://127.0.0.1:9/hook is a private address: pass --allow-private-urls" in text
