"""Configuration slices of the pipeline. Defaults reproduce google-research/bert's MRPC recipe and
live here once; CLI flags and prefect.yaml carry overrides only."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

BERT_TINY_URL = "https://storage.googleapis.com/bert_models/2020_02_20/uncased_L-2_H-128_A-2.zip"


class _Slice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RowBounds(_Slice):
    """Accepted row counts per GLUE split (a data drop far off these is a broken drop)."""

    train: tuple[int, int] = (3000, 5000)
    dev: tuple[int, int] = (300, 600)
    test: tuple[int, int] = (1000, 2500)


class DataConfig(_Slice):
    """Where the data and the pretrained checkpoint come from, and how shards are cut."""

    mrpc_source: str | None = Field(
        None, description="Folder or file:// URL holding GLUE's train/dev/test.tsv or the MSR "
                          "source files, or an http(s) base URL holding the MSR files. "
                          "Default: the public MSR files, pinned.")
    mirror: str | None = Field(
        None, description="Base URL or folder holding the default files under their own names "
                          "(air-gapped sites); pins still apply.")
    checkpoint: str = Field(BERT_TINY_URL, description="Google release zip or folder, or a "
                            "Hugging Face folder: path, file:// or http(s):// URL.")
    checkpoint_sha256: str | None = Field(None, description="Pin for a user-given checkpoint.")
    row_bounds: RowBounds = RowBounds()
    shard_size: int = Field(1024, gt=0, description="Examples per shard.")
    workers: int = Field(2, gt=0, description="Processes that tokenize shards in parallel.")
    timeout_s: float = Field(60.0, gt=0, description="Network timeout per request.")


class ModelConfig(_Slice):
    """The input side of the model: how text becomes features."""

    max_seq_length: int = Field(128, ge=8, le=512)
    do_lower_case: bool = True
    labels: tuple[str, ...] = ("0", "1")
