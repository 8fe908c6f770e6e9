"""The data stage as flows of their own: `bertflow validate` checks a data drop; `prepare_mrpc`
goes on to the shards; `prepare_mrpc_per_shard` writes each shard as a Prefect task, on a Dask
cluster with `prepare_mrpc_on_dask`."""

from __future__ import annotations

from prefect import Flow, flow

from tasks.config import DataConfig, ModelConfig
from tasks.download import download, download_mrpc
from tasks.tokenize import Shards, run_as_tasks, tokenize, tokenize_stage
from tasks.validate import validate


@flow(name="validate-mrpc")
def validate_mrpc(data: DataConfig = DataConfig(), home: str = ".bertflow") -> str:
    """Download and validate MRPC (no checkpoint needed); returns the validation report's path."""
    return validate(download_mrpc(data, home), data, home)


@flow(name="prepare-mrpc")
def prepare_mrpc(data: DataConfig = DataConfig(), model: ModelConfig = ModelConfig(),
                 home: str = ".bertflow") -> Shards:
    raw = download(data, home)
    validate(raw, data, home)
    return tokenize(raw, data, model, home)


@flow(name="prepare-mrpc-per-shard")
def prepare_mrpc_per_shard(data: DataConfig = DataConfig(), model: ModelConfig = ModelConfig(),
                           home: str = ".bertflow") -> Shards:
    """prepare_mrpc with every shard written by its own `write-shard` task on this flow's task
    runner; the manifest, the shard contract and the publish by rename are the same."""
    raw = download(data, home)
    validate(raw, data, home)
    return tokenize_stage(raw, data, model, home, run=run_as_tasks)


def prepare_mrpc_on_dask(address: str | None = None) -> Flow:
    """prepare_mrpc_per_shard on the Dask scheduler at `address` (`tcp://host:8786`; its workers
    need bertflow installed and `home` on a filesystem they share), or on a LocalCluster started
    for the run. Needs the `dask` extra. Returns the flow: `prepare_mrpc_on_dask(address)(data)`."""
    from prefect_dask import DaskTaskRunner  # optional: pip install 'bertflow[dask]'

    return prepare_mrpc_per_shard.with_options(task_runner=DaskTaskRunner(address=address))
