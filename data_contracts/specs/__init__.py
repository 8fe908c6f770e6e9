"""Task specs: how each task's files become examples, and what its labels and metric are.

    spec = task_spec(TaskConfig(name="cola"))
    train = spec.read(data_folder, spec.split("train"))   # the examples frame (specs/spec.py)

Built in: run_classifier's MRPC, CoLA, MNLI and XNLI, and GLUE's SST-2, RTE and STS-B, each in
the file layout of its public release; `custom` is the user's own files with a column mapping.
"""

from __future__ import annotations

from data_contracts.specs.config import BUILT_IN, TaskConfig
from data_contracts.specs.custom import custom
from data_contracts.specs.glue import COLA, MNLI, MRPC, RTE, SST2, STSB
from data_contracts.specs.spec import EXAMPLE_COLUMNS, Source, SplitSpec, TaskSpec
from data_contracts.specs.xnli import xnli

GLUE = {spec.name: spec for spec in (MRPC, COLA, SST2, RTE, STSB, MNLI)}


def default_metric(task: str, regression: bool = False) -> str:
    """The dev metric that promotes a task's models unless the registry names another.

    >>> default_metric("cola"), default_metric("custom"), default_metric("custom", True)
    ('mcc', 'accuracy', 'pearson')
    """
    if task in GLUE:
        return GLUE[task].metric
    return "pearson" if regression else "accuracy"


def task_spec(cfg: TaskConfig) -> TaskSpec:
    """The spec `cfg` names (XNLI in its language; custom over its files and mapping)."""
    if cfg.name == "custom":
        return custom(cfg)
    if cfg.name == "xnli":
        return xnli(cfg.language)
    return GLUE[cfg.name]


__all__ = ["BUILT_IN", "EXAMPLE_COLUMNS", "GLUE", "Source", "SplitSpec", "TaskConfig", "TaskSpec",
           "default_metric", "task_spec"]
