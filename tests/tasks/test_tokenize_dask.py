"""Shards written as one Prefect task each on a real Dask cluster: the same bytes as the local path,
every shard a Completed task run, and the work done in the cluster's worker processes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from flows.data import prepare, prepare_on_dask
from tasks.config import ModelConfig
from tasks.fingerprint import SEAL

distributed = pytest.importorskip("distributed")  # the `dask` extra
pytest.importorskip("prefect_dask")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]
MODEL = ModelConfig(max_seq_length=32)


@pytest.fixture
def cluster():
    """Two worker processes, one thread each, on loopback; closed whatever the test does."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        yield cluster


def digests(folder: str) -> dict[str, str]:
    """Every file's sha256 but the seal's (it records each file's mtime)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(folder).iterdir()
            if p.name != SEAL}


def task_runs(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def test_shards_written_on_dask_equal_the_local_ones(cluster, tiny_sources, tmp_path):
    local = prepare(tiny_sources, MODEL, str(tmp_path / "local"))
    with distributed.Client(cluster) as client, distributed.get_task_stream(client) as stream:
        state = prepare_on_dask(cluster.scheduler_address)(
            tiny_sources, MODEL, str(tmp_path / "dask"), return_state=True)
        worker_pids = client.run(os.getpid)  # {worker address: pid}
    on_dask = state.result()

    # The user's view: the same folder name, manifest and shard files, byte for byte.
    assert Path(on_dask.shard_dir).name == Path(local.shard_dir).name
    assert digests(on_dask.shard_dir) == digests(local.shard_dir)
    manifest = json.loads(on_dask.manifest.read_text())
    stems = [s["parquet"].removesuffix(".parquet")
             for split in manifest["splits"].values() for s in split["shards"]]
    assert len(stems) > 3  # shard_size 8: several shards per split

    # One Completed `write-shard` task run per shard, in the Prefect API ...
    writes = [r for r in task_runs(state.state_details.flow_run_id)
              if r.name.startswith("write-shard-")]
    assert sorted(r.name for r in writes) == sorted(f"write-shard-{s}" for s in stems)
    assert all(r.state.is_completed() for r in writes), [r.state.name for r in writes]

    # ... each run by a Dask worker process, none in this one.
    ran_on = [t["worker"] for t in stream.data if t["key"].startswith("write_shard")]
    assert len(ran_on) == len(stems)
    assert set(ran_on) <= set(worker_pids)
    assert os.getpid() not in {worker_pids[w] for w in ran_on}
