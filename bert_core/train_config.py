"""The fine-tuning settings: google-research/bert's MRPC recipe unless overridden."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Precision = Literal["float32", "mixed_bfloat16", "mixed_float16"]


class TrainConfig(BaseModel):
    """Fine-tuning: google-research/bert's MRPC recipe unless overridden."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    learning_rate: float = Field(2e-5, gt=0)
    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(32, gt=0, description="Examples per optimizer update (the global "
                                                  "batch, split over devices and micro-batches).")
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
                               "pair (less compute, the same model up to float rounding); "
                               "max_length: every batch max_seq_length wide, as run_classifier.")
    bucket_boundaries: tuple[int, ...] = Field(
        (), description="Length bucketing: batch pairs of similar length, each padded only to "
                        "its bucket's bound, e.g. (32, 48, 64, 80, 96); other batches than "
                        "run_classifier's. Empty: run_classifier's batches, padded as `padding`.")
    precision: Precision = Field(
        "float32", description="float32 (the recipe), or mixed: bfloat16 / float16 compute with "
                               "float32 weights (float16 with dynamic loss scaling).")
    jit_compile: bool = Field(False, description="XLA-compile the train step (TensorFlow; JAX "
                                                 "always compiles).")
    accumulate_steps: int = Field(
        1, ge=1, description="Split each batch into this many micro-batches and update once "
                             "with their mean gradient: the same steps in less memory.")
    eval_every_steps: int | None = Field(
        None, gt=0, description="Evaluate on dev every this many steps (and at the end).")
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop after this many evaluations without improvement.")
    early_stopping_min_delta: float = Field(
        0.0, ge=0, description="The least change of the metric that counts as improvement.")
    early_stopping_metric: Literal["loss", "accuracy"] = Field(
        "loss", description="The dev metric early stopping and restore_best watch.")
    class_weight: Literal["none", "balanced"] = Field(
        "none", description="balanced: weight each example's loss by n_samples / (n_classes * "
                            "count of its class) in train (sklearn's compute_class_weight), so "
                            "a rare class (CoLA's 30%) counts as much as a common one; the "
                            "dev loss stays unweighted. Classification only.")
    restore_best: bool = Field(
        False, description="End with the weights of the best evaluation, not the last step "
                           "(run_classifier keeps the last).")

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.batch_size % self.accumulate_steps:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of "
                             f"accumulate_steps {self.accumulate_steps}")
        needs_eval = [name for name in ("early_stopping_patience", "restore_best")
                      if getattr(self, name)]
        if needs_eval and self.eval_every_steps is None:
            raise ValueError(f"{', '.join(needs_eval)} needs eval_every_steps")
        return self
