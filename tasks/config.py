"""Configuration slices of the pipeline. Defaults reproduce google-research/bert's MRPC recipe and
live here once; CLI flags and prefect.yaml carry overrides only."""

from __future__ import annotations

from typing import ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bert_core.tokenization import MEMO_WORDS
from bert_core.train_config import TrainConfig
from data_contracts.specs import TaskConfig, TaskSpec, task_spec

Stage = Literal["download", "validate", "tokenize", "train", "evaluate", "register"]
STAGES: tuple[str, ...] = get_args(Stage)  # in the order the fine-tune flow runs them
BERT_TINY_URL = "https://storage.googleapis.com/bert_models/2020_02_20/uncased_L-2_H-128_A-2.zip"


class _Slice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RowBounds(_Slice):
    """Accepted row counts per split, overriding the task's own (a data drop far off these is a
    broken drop); `dev` and `test` also bound a task's other evaluation and test splits."""

    train: tuple[int, int] | None = None
    dev: tuple[int, int] | None = None
    test: tuple[int, int] | None = None

    def of(self, spec: TaskSpec, split: str) -> tuple[int, int]:
        role = {"train": "train", "eval": "dev", "test": "test"}[spec.split(split).role]
        return getattr(self, split, None) or getattr(self, role) or spec.bounds(split)


class DataConfig(_Slice):
    """Where the data and the pretrained checkpoint come from, and how shards are cut."""

    # Fields that say where files come from (their content is hashed where it is used) and how
    # they are fetched or processed: none changes what a stage after the download writes.
    SOURCES: ClassVar[tuple[str, ...]] = ("source", "mirror", "checkpoint",
                                          "checkpoint_sha256")
    TRANSPORT: ClassVar[tuple[str, ...]] = ("workers", "timeout_s")

    drops: str | None = Field(
        None, description="A drop location: a folder or http(s) base URL holding one subfolder "
                          "per data drop, named so that they sort (2026-11-30/), or a LATEST "
                          "file naming one. Each run takes the newest drop as its source; a "
                          "task's relative file names (--train) are read inside it.")
    source: str | None = Field(
        None, description="Folder, file:// or http(s) base URL holding the task's files in the "
                          "layout of its release (MRPC: GLUE's train/dev/test.tsv or the MSR "
                          "source files), or its release zip. Default: the public release, "
                          "pinned.")
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

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, values):
        """`mrpc_source` (configs written before tasks other than MRPC) is `source` now."""
        if isinstance(values, dict) and "mrpc_source" in values:
            values = dict(values)
            old = values.pop("mrpc_source")
            values.setdefault("source", old)
        return values


class ModelConfig(_Slice):
    """The input side of the model: how text becomes features."""

    max_seq_length: int = Field(128, ge=8, le=512)
    do_lower_case: bool = True


class EvalConfig(_Slice):
    batch_size: int = Field(64, gt=0)
    collapse_share: float = Field(
        0.95, gt=0.5, le=1, description="Predicting one class for at least this share of dev "
                                        "examples counts as collapsed.")


class RegistryConfig(_Slice):
    tracking_uri: str | None = Field(None, description="Default: SQLite store under home.")
    experiment: str | None = Field(None, description="Default: bertflow-<task>.")
    model_name: str | None = Field(None, description="Default: bertflow-<task>.")
    promote_metric: str | None = Field(None, description="The dev metric a new version must "
                                       "beat the champion on. Default: the task's GLUE metric.")

    eval_set: str | None = Field(
        None, description="A pinned evaluation set: a folder or base URL holding the task's "
                          "dev file(s), scored in place of the drop's dev by evaluate and the "
                          "gate, so that every version faces the same exam.")
    min_delta: float = Field(0.0, ge=0, description="The least gain in the promote metric "
                             "over the champion (or the constant predictor) that promotes.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level: the bootstrap "
                         "interval is 1 - alpha; McNemar's exact test (accuracy) must reach it.")
    bootstrap_resamples: int = Field(2000, ge=1000, description="Paired bootstrap resamples "
                                     "of the evaluation set.")
    seed: int = Field(20261130, description="Seed of the bootstrap: the same models on the same "
                      "evaluation set give the same interval.")
    parity_tolerance: float = Field(1e-5, gt=0, description="Most a served probability may "
                                    "differ from evaluate's before no alias moves.")
    max_batch_rows: int = Field(1024, ge=1, description="Most rows one request to the served "
                                "model may carry; a larger batch is rejected.")
    memo_words: int = Field(MEMO_WORDS, ge=0, description="Words the served tokenizer remembers "
                            "(least recently used first out); 0 remembers none.")
    runtime: Literal["keras", "onnx"] = Field(
        "keras", description="What runs the served classifier: the Keras model, or its ONNX "
                             "export (the same weights, bert_core/onnx_export.py) in ONNX "
                             "Runtime, faster on one request at a time; needs the `onnx` extra. "
                             "Registration checks either against evaluate's answers.")
    calibrate: bool = Field(True, description="Fit a temperature (and, for two classes, a "
                            "decision threshold) on dev at registration; the served model "
                            "applies them. Regression tasks are never calibrated.")
    threshold: Literal["max_f1", "precision", "argmax"] = Field(
        "max_f1", description="How a two-class model decides, on its calibrated P(positive): "
                              "the threshold of the highest dev F1, the lowest reaching "
                              "target_precision on dev, or the likelier class (argmax).")
    target_precision: float = Field(0.9, gt=0, le=1, description="The dev precision the "
                                    "'precision' threshold must reach; unreachable: argmax, "
                                    "with a warning in the calibration record.")

    def for_task(self, spec: TaskSpec) -> RegistryConfig:
        """This slice with the task's defaults filled in."""
        return self.defaults(spec.name, spec.metric)

    def defaults(self, task: str, metric: str) -> RegistryConfig:
        """This slice with bertflow-<task> and `metric` where it leaves them open."""
        return self.model_copy(update={"experiment": self.experiment or f"bertflow-{task}",
                                       "model_name": self.model_name or f"bertflow-{task}",
                                       "promote_metric": self.promote_metric or metric})


class DriftCheck(_Slice):
    """A drift statistic's thresholds: at or over `warn` it is reported, at or over `block` the
    flow stops before training (None: never)."""

    warn: float | None = None
    block: float | None = None


class DriftConfig(_Slice):
    """What counts as drift of a new drop against the data the champion was trained on.

    label_shift: the largest change in one class's share (regression: in the mean score, over
    the score range), flagged only when the chi-square test of the two label counts (regression:
    KS) has p < `significance`; length_psi / length_ks: population stability index and KS
    statistic of token lengths; truncated / unk_rate: change in the share of examples longer
    than max_seq_length and of [UNK] tokens; duplicates: share of the drop's examples repeating
    another; eval_overlap: share of evaluation examples also in the drop's train."""

    enabled: bool = True
    significance: float = Field(0.01, gt=0, lt=1)
    label_shift: DriftCheck = DriftCheck(warn=0.10, block=0.25)
    length_psi: DriftCheck = DriftCheck(warn=0.10, block=0.25)
    length_ks: DriftCheck = DriftCheck(warn=0.10, block=0.30)
    truncated: DriftCheck = DriftCheck(warn=0.05, block=0.20)
    unk_rate: DriftCheck = DriftCheck(warn=0.01, block=0.05)
    duplicates: DriftCheck = DriftCheck(warn=0.01, block=0.10)
    eval_overlap: DriftCheck = DriftCheck(warn=0.01, block=0.05)


class PipelineConfig(_Slice):
    """Everything one fine-tune run needs; the flow's (and the deployment's) parameter schema."""

    home: str = Field(".bertflow", description="All state: caches, shards, models, MLflow store.")
    task: TaskConfig = TaskConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    registry: RegistryConfig = RegistryConfig()
    drift: DriftConfig = DriftConfig()

    @property
    def spec(self) -> TaskSpec:
        return task_spec(self.task)

    @property
    def registry_for_task(self) -> RegistryConfig:
        return self.registry.for_task(self.spec)


class SweepConfig(_Slice):
    """A grid of fine-tunes: every learning rate with every seed."""

    learning_rates: tuple[float, ...] = Field((2e-5, 3e-5, 5e-5), min_length=1)
    seeds: tuple[int, ...] = Field((1, 2, 3), min_length=1)
