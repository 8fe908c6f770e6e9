"""The Prefect and MLflow servers on PostgreSQL, as docs/scaling.md lays them out: one throwaway
cluster, a database each, MLflow's artifacts in a shared folder; a flow run from another process
and an MLflow run with a registered, aliased model go in through the servers' URLs, come back out
of them, and are rows in PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.postgres import Servers, postgres, servers_on_postgres  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow
FLOW = """
from prefect import flow

@flow(name="hello-postgres")
def hello(x: int) -> int:
    return x + 1

state = hello(2, return_state=True)
print(state.state_details.flow_run_id, state.result())
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("on-postgres")


@pytest.fixture(scope="module")
def servers(postgres, root) -> Iterator[Servers]:  # noqa: F811
    with servers_on_postgres(postgres, root) as servers:
        yield servers


def test_create_database_gives_a_url_a_client_connects_to_once_or_twice(postgres):  # noqa: F811
    assert postgres.create_database("twice") == postgres.create_database("twice") \
        == f"postgresql://bertflow@127.0.0.1:{postgres.port}/twice"
    assert postgres.rows("twice", "SELECT current_database(), pg_encoding_to_char(encoding) "
                         "FROM pg_database WHERE datname = current_database()") == \
        [("twice", "UTF8")]


def test_a_flow_run_from_another_process_is_kept_in_postgres(postgres, servers, root,  # noqa: F811
                                                            tmp_path):
    script = tmp_path / "hello.py"
    script.write_text(FLOW)
    done = subprocess.run([sys.executable, str(script)], env=servers.env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    run_id, result = done.stdout.split()[-2:]
    assert result == "3"

    with temporary_settings(updates={PREFECT_API_URL: servers.prefect_api_url}), \
            get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
        flow = client.read_flow(run.flow_id)
    assert (flow.name, run.state.type.value, run.parameters) == \
        ("hello-postgres", "COMPLETED", {"x": 2})
    assert postgres.rows("prefect", "SELECT f.name, r.state_type::text FROM flow_run r "
                         "JOIN flow f ON f.id = r.flow_id WHERE r.id = %s::uuid", (run_id,)) == \
        [("hello-postgres", "COMPLETED")]
    assert list(root.rglob("*.db")) == []  # nothing in SQLite


def test_runs_models_and_aliases_are_kept_in_postgres_and_artifacts_in_the_shared_folder(
        postgres, servers, root, tmp_path):  # noqa: F811
    client = MlflowClient(tracking_uri=servers.mlflow_url, registry_uri=servers.mlflow_url)
    experiment = client.create_experiment("on-postgres")
    run_id = client.create_run(experiment).info.run_id
    client.log_metric(run_id, "dev_f1", 0.75, step=3)
    notes = tmp_path / "notes.txt"
    notes.write_text("kept beside the run\n")
    client.log_artifact(run_id, str(notes), artifact_path="report")
    client.set_terminated(run_id)
    client.create_registered_model("on-postgres")
    version = client.create_model_version("on-postgres", f"runs:/{run_id}/report", run_id=run_id)
    client.set_registered_model_alias("on-postgres", "champion", version.version)

    assert client.get_run(run_id).data.metrics == {"dev_f1": 0.75}
    champion = client.get_model_version_by_alias("on-postgres", "champion")
    assert (champion.version, champion.run_id) == ("1", run_id)
    back = Path(client.download_artifacts(run_id, "report/notes.txt", str(tmp_path / "back")))
    assert back.read_text() == "kept beside the run\n"

    assert client.get_experiment(experiment).artifact_location == f"mlflow-artifacts:/{experiment}"
    kept = servers.artifacts / experiment / run_id / "artifacts" / "report" / "notes.txt"
    assert kept.read_text() == "kept beside the run\n"
    assert postgres.rows("mlflow", "SELECT key, value, step FROM metrics WHERE run_uuid = %s",
                         (run_id,)) == [("dev_f1", 0.75, 3)]
    assert postgres.rows("mlflow", "SELECT name, version, run_id FROM model_versions") == \
        [("on-postgres", 1, run_id)]
    assert postgres.rows("mlflow", "SELECT name, alias, version FROM registered_model_aliases") \
        == [("on-postgres", "champion", 1)]
    assert list(root.rglob("*.db")) == []  # nothing in SQLite
