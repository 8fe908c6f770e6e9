"""The data stage as flows of their own: `bertflow validate` checks a data drop (`validate_data`);
`prepare` goes on to the shards; `prepare_per_shard` writes each shard as a Prefect task, on a Dask
cluster with `prepare_on_dask`."""

from __future__ import annotations

from prefect import Flow, flow

from data_contracts.specs import TaskConfig
from tasks.config import DataConfig, ModelConfig
from tasks.download import download, download_task_data
from tasks.tokenize import Shards, run_as_tasks, tokenize, tokenize_stage
from tasks.validate import validate


@flow(name="validate-data")
def validate_data(data: DataConfig = DataConfig(), home: str = ".bertflow",
                  task: TaskConfig = TaskConfig()) -> str:
    """Download and validate a task's files (no checkpoint needed); returns the validation
    report's path."""
    return validate(download_task_data(task, data, home), task, data, home)


@flow(name="prepare")
def prepare(data: DataConfig = DataConfig(), model: ModelConfig = ModelConfig(),
            home: str = ".bertflow", task: TaskConfig = TaskConfig()) -> Shards:
    raw = download(task, data, home)
    validate(raw, task, data, home)
    return tokenize(raw, task, data, model, home)


@flow(name="prepare-per-shard")
def prepare_per_shard(data: DataConfig = DataConfig(), model: ModelConfig = ModelConfig(),
                      home: str = ".bertflow", task: TaskConfig = TaskConfig()) -> Shards:
    """prepare with every shard written by its own `write-shard` task on this flow's task
    runner; the manifest, the shard contract and the publish by rename are the same."""
    raw = download(task, data, home)
    validate(raw, task, data, home)
    return tokenize_stage(raw, task, data, model, home, run=run_as_tasks)


def prepare_on_dask(address: str | None = None) -> Flow:
    """prepare_per_shard on the Dask scheduler at `address` (`tcp://host:8786`; its workers
    need bertflow installed and `home` on a filesystem they share), or on a LocalCluster started
    for the run. Needs the `dask` extra. Returns the flow: `prepare_on_dask(address)(data)`."""
    from prefect_dask import DaskTaskRunner  # optional: pip install 'bertflow[dask]'

    return prepare_per_shard.with_options(task_runner=DaskTaskRunner(address=address))
