"""The data stage as a flow of its own: what `bertflow validate` runs, and the head of the
fine-tune flow."""

from __future__ import annotations

from prefect import flow

from tasks.config import DataConfig, ModelConfig
from tasks.download import download
from tasks.tokenize import Shards, tokenize
from tasks.validate import validate, validate_shards


@flow(name="prepare-mrpc")
def prepare_mrpc(data: DataConfig = DataConfig(), model: ModelConfig = ModelConfig(),
                 home: str = ".bertflow") -> Shards:
    raw = download(data, home)
    validate(raw, data)
    shards = tokenize(raw, data, model, home)
    validate_shards(shards, raw)
    return shards
