"""The `bertflow` command's options and how they become configuration: the flags shared by
several commands, the home every command works in, and `load_config`, which turns a --config file
plus the flags given into one PipelineConfig. The CLI (flows/cli.py) is the only caller."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

HOME_HELP = "All state: caches, shards, models, Prefect results, MLflow store."
Home = Annotated[Path, typer.Option(help=HOME_HELP)]
ConfigHome = Annotated[Optional[Path], typer.Option(
    help=HOME_HELP + " Default: --config's `home`, else .bertflow.")]
DEFAULT_HOME = Path(".bertflow")


# TensorFlow reads these when it is first imported, so they are set before any task module loads.
# A user's own value wins. prefect.yaml gives its deployments the same (job_variables.env).
TENSORFLOW_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # TensorFlow's pooled (BFC) CPU allocator: the default hands every large temporary to malloc,
    # which maps it anew each step; page faults took 19% of a training profile. Pooled, MiniLM-L3
    # padded (bench/train.py): peak RSS 1.76x -> 1.44x of Hugging Face's, and 4-33% more
    # examples/s on the two machines measured.
    "TF_CPU_ALLOCATOR_USE_BFC": "true",
}


def use_home(home: Path) -> Path:
    """Point Prefect's local state at the home, keep every tool's telemetry off, and set
    TensorFlow's environment."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    for name, value in (("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
                        ("MLFLOW_DISABLE_TELEMETRY", "true"), ("GX_ANALYTICS_ENABLED", "false"),
                        ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
                        *TENSORFLOW_ENV.items()):
        os.environ.setdefault(name, value)
    return home


def load_config(config: Path | None, home: Path | None, overrides: dict[str, dict]):
    """PipelineConfig from an optional JSON/YAML file, then the flags that were given. The home
    is --home, else the file's `home`, else DEFAULT_HOME, made absolute."""
    import yaml

    from tasks.config import PipelineConfig

    from pydantic import ValidationError

    try:
        values = yaml.safe_load(config.read_text()) or {} if config else {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{config}, line {mark.line + 1}" if mark else str(config)
        raise typer.BadParameter(f"{where}: not YAML/JSON: {getattr(err, 'problem', None) or err}",
                                 param_hint="--config") from None
    if not isinstance(values, dict):
        raise typer.BadParameter(f"{config}: expected a mapping of sections, got "
                                 f"{type(values).__name__}", param_hint="--config")
    values["home"] = str(Path(home or values.get("home") or DEFAULT_HOME).resolve())
    for section, fields in overrides.items():
        given = {k: v for k, v in fields.items() if v is not None}
        if given:
            values[section] = {**values.get(section, {}), **given}
    try:
        return PipelineConfig.model_validate(values)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise typer.BadParameter(f"{config or 'flags'}: {problems}") from None


Config = Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False,
                                                help="YAML/JSON PipelineConfig.")]


def _flag(kind: type, help: str):
    """An optional flag: None when not given, so the config file's value (or the default) stands."""
    return Annotated[Optional[kind], typer.Option(help=help)]


TaskName = Annotated[Optional[str], typer.Option(
    "--task", help="mrpc (default), cola, sst2, rte, stsb, mnli, xnli, or custom (your own files: "
                   "--train, --dev, --text-a, --label...).")]
DataSource = Annotated[Optional[str], typer.Option(
    "--source", "--mrpc-source", help="The task's files as released (MRPC: GLUE TSVs or MSR "
                                      "files): folder, zip, file:// or http(s) base.")]
TrainFile = _flag(str, "custom: train file (CSV, TSV, JSONL, Parquet): path or URL.")
DevFile = _flag(str, "custom: dev file (default: a stratified 10% of train).")
TestFile = _flag(str, "custom: a file to predict.")
TextA = _flag(str, "custom: column of the (first) text (default `text`).")
TextB = _flag(str, "custom: column of the second text, for pairs.")
LabelColumn = _flag(str, "custom: column of the label (default `label`).")
Regression = Annotated[Optional[bool], typer.Option(
    "--regression/--classification", help="custom: the label is a number to predict.")]
Mirror = _flag(str, "Base URL/folder with the default files (pins apply).")
Checkpoint = _flag(str, "Google zip/folder or HF folder: path or URL.")
CheckpointSha = _flag(str, "sha256 pin for --checkpoint.")
Architecture = _flag(str, "checkpoint: the checkpoint's bert_config (default); bert-tiny: "
                              "BERT-Tiny's, trained from scratch.")
Epochs = _flag(float, "Passes over train (default 3; fractions allowed).")
BatchSize = _flag(int, "Training examples per step (default 32).")
MaxSeqLength = _flag(int, "Tokens per pair after packing, 8-512 (default 128).")
Seed = _flag(int, "Seed of shuffling, dropout and the new weights (default 12345).")
LearningRate = _flag(float, "AdamW's peak learning rate (default 2e-5).")
TrackingUri = _flag(str, "MLflow tracking URI (default: SQLite under --home).")
Drops = _flag(str, "A drop location (folder or http(s) base URL, one sub-folder per data drop, "
                   "or a LATEST file): the run trains on the newest drop.")
EvalSet = _flag(str, "A pinned evaluation set (folder or URL with the task's dev file; custom: "
                     "the dev file) that every version is scored and compared on.")
MinDelta = _flag(float, "The least gain in the promote metric that promotes (default 0).")
NoCheckpoint = Annotated[bool, typer.Option("--no-checkpoint", help="Random init (the checkpoint "
                                            "still gives vocab and config).")]
AsJson = Annotated[bool, typer.Option("--json", help="End with one JSON line: run id, task "
                                      "states, metrics, model version.")]


def task_overrides(task=None, train=None, dev=None, test=None, text_a=None, text_b=None,
                   label=None, regression=None) -> dict[str, dict]:
    """The task flags, as the PipelineConfig's task section."""
    return {"task": {"name": task, "train": train, "dev": dev, "test": test, "text_a": text_a,
                     "text_b": text_b, "label": label, "regression": regression}}


def overrides(source, mirror, checkpoint, checkpoint_sha256, no_checkpoint, architecture,
              epochs, batch_size, max_seq_length, tracking_uri, task: dict | None = None,
              drops=None, eval_set=None, min_delta=None, **train) -> dict[str, dict]:
    """The flags shared by `run` and `sweep`, as PipelineConfig sections."""
    return {**task_overrides(**(task or {})),
            "data": {"source": source, "mirror": mirror, "checkpoint": checkpoint,
                     "checkpoint_sha256": checkpoint_sha256, "drops": drops},
            "model": {"max_seq_length": max_seq_length},
            "train": {"epochs": epochs, "batch_size": batch_size, "architecture": architecture,
                      "init_from_checkpoint": False if no_checkpoint else None, **train},
            "registry": {"tracking_uri": tracking_uri, "eval_set": eval_set,
                         "min_delta": min_delta}}
