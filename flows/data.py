"""The data stage as flows of their own: `bertflow validate` checks a data drop; `prepare_mrpc`
goes on to the shards."""

from __future__ import annotations

from prefect import flow

from tasks.config import DataConfig, ModelConfig
from tasks.download import download, download_mrpc
from tasks.tokenize import Shards, tokenize
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
