"""The task slice of the pipeline's configuration: which task, and for `custom` the files and how
their columns map onto examples."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FileFormat = Literal["auto", "csv", "tsv", "jsonl", "parquet"]
BUILT_IN = ("mrpc", "cola", "sst2", "rte", "stsb", "mnli", "xnli")


class TaskConfig(BaseModel):
    """`name`: a built-in task (its files under `data.source`) or `custom` (the files here)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["mrpc", "cola", "sst2", "rte", "stsb", "mnli", "xnli", "custom"] = "mrpc"
    train: str | None = Field(None, description="custom: the train file (path, file:// or "
                                                "http(s)://): CSV, TSV, JSON Lines or Parquet.")
    dev: str | None = Field(None, description="custom: the dev file. Default: a stratified, "
                                              "seeded `dev_fraction` of train.")
    test: str | None = Field(None, description="custom: a file to predict (labels optional).")
    format: FileFormat = Field("auto", description="custom: the files' format (auto: from the "
                                                   "file name's suffix).")
    text_a: str = Field("text", description="custom: the column of the (first) text.")
    text_b: str | None = Field(None, description="custom: the column of the second text, for "
                                                 "pairs.")
    label: str = Field("label", description="custom: the column of the label (or score).")
    id: str | None = Field(None, description="custom: a column of example ids (default: "
                                             "<split>-<row>).")
    labels: tuple[str, ...] | None = Field(None, description="custom: the label names, in "
                                           "order (default: those in train, sorted).")
    regression: bool = Field(False, description="custom: the label is a number to predict.")
    dev_fraction: float = Field(0.1, gt=0, lt=1, description="custom: the share of train kept "
                                                             "for dev when no dev file is given.")
    split_seed: int = Field(12345, description="custom: the seed of that split.")
    language: str = Field("zh", description="xnli: the language trained and evaluated.")

    @model_validator(mode="after")
    def _custom_has_files(self) -> TaskConfig:
        if self.name == "custom" and not self.train:
            raise ValueError("task custom needs a train file (task.train, --train)")
        if self.name != "custom" and (self.train or self.dev or self.test):
            raise ValueError(f"task {self.name} reads its own files from data.source; "
                             "train/dev/test files are for task custom")
        if self.regression and self.labels:
            raise ValueError("a regression task has no label names")
        return self
