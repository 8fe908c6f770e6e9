"""Configuration slices of the pipeline. Defaults reproduce google-research/bert's MRPC recipe and
live here once; CLI flags and prefect.yaml carry overrides only."""

from __future__ import annotations

from typing import ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Stage = Literal["download", "validate", "tokenize", "train", "evaluate", "register"]
STAGES: tuple[str, ...] = get_args(Stage)  # in the order the fine-tune flow runs them
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

    # Fields that say where files come from (their content is hashed where it is used) and how
    # they are fetched or processed: none changes what a stage after the download writes.
    SOURCES: ClassVar[tuple[str, ...]] = ("mrpc_source", "mirror", "checkpoint",
                                          "checkpoint_sha256")
    TRANSPORT: ClassVar[tuple[str, ...]] = ("workers", "timeout_s")

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


class TrainConfig(_Slice):
    """Fine-tuning: google-research/bert's MRPC recipe unless overridden."""

    learning_rate: float = Field(2e-5, gt=0)
    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(32, gt=0)
    warmup_proportion: float = Field(0.1, ge=0, lt=1)
    seed: int = 12345
    init_from_checkpoint: bool = Field(True, description="False: random init (from scratch).")
    architecture: Literal["checkpoint", "bert-tiny"] = Field(
        "checkpoint", description="The checkpoint's bert_config, or BERT-Tiny's (from scratch).")
    shuffle_buffer: int = Field(100, gt=0, description="run_classifier shuffles with 100.")
    save_every_steps: int = Field(50, gt=0, description="Training checkpoint interval (resume).")
    save_min_seconds: float = Field(
        120.0, ge=0, description="...and at least this many seconds between checkpoints: each "
                                 "one writes the weights and AdamW's moments (MiniLM-L3: ~3 s).")
    padding: Literal["dynamic", "max_length"] = Field(
        "dynamic", description="dynamic: run_classifier's batches, each cut to its own longest "
                               "pair (less compute; with dropout off, the same model up to float "
                               "rounding: dropout draws its masks per batch shape); max_length: "
                               "every batch max_seq_length wide, as run_classifier.")
    bucket_boundaries: tuple[int, ...] = Field(
        (), description="Length bucketing: batch pairs of similar length, each padded only to "
                        "its bucket's bound, e.g. (32, 48, 64, 80, 96); other batches than "
                        "run_classifier's. Empty: run_classifier's batches, padded as `padding`.")
    mixed_precision: bool = Field(False, description="float16 compute on GPU.")
    jit_compile: bool = Field(False, description="XLA-compile the train step.")


class EvalConfig(_Slice):
    batch_size: int = Field(64, gt=0)
    collapse_share: float = Field(
        0.95, gt=0.5, le=1, description="Predicting one class for at least this share of dev "
                                        "examples counts as collapsed.")


class RegistryConfig(_Slice):
    tracking_uri: str | None = Field(None, description="Default: SQLite store under home.")
    experiment: str = "bertflow-mrpc"
    model_name: str = "bertflow-mrpc"
    promote_metric: Literal["f1", "accuracy", "roc_auc"] = "f1"


class PipelineConfig(_Slice):
    """Everything one fine-tune run needs; the flow's (and the deployment's) parameter schema."""

    home: str = Field(".bertflow", description="All state: caches, shards, models, MLflow store.")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    registry: RegistryConfig = RegistryConfig()


class SweepConfig(_Slice):
    """A grid of fine-tunes: every learning rate with every seed."""

    learning_rates: tuple[float, ...] = Field((2e-5, 3e-5, 5e-5), min_length=1)
    seeds: tuple[int, ...] = Field((1, 2, 3), min_length=1)
