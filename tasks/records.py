"""The small records tasks hand each other: paths plus the content hashes that key caching."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tasks.fingerprint import FileStamp


class _Record(BaseModel):
    """`files`: the stamps of every file the record points to, checked before a cached record is
    trusted (tasks/caching.py); they are not part of any cache key."""

    model_config = ConfigDict(frozen=True)
    files: tuple[FileStamp, ...] = ()


class TaskData(_Record):
    """A task's files (as its spec names them) in a content-addressed folder, and their hashes."""

    data_dir: str  # e.g. train.tsv, dev.tsv, test.tsv
    task: str = "mrpc"
    sha256: dict[str, str]  # file name -> sha256 (and, in RawData, "checkpoint")

    def file(self, name: str) -> Path:
        return Path(self.data_dir) / name


class RawData(TaskData):
    """What the download stage hands on: the task's files and the pretrained checkpoint."""

    checkpoint_dir: str  # bert_config.json (+ bert_model.ckpt.*) or config.json + model.safetensors
    vocab_file: str


class Shards(_Record):
    """What the tokenize stage hands on: the shard folder and its manifest's hash and counts."""

    shard_dir: str
    manifest_sha256: str
    rows: dict[str, int]

    @property
    def manifest(self) -> Path:
        return Path(self.shard_dir) / "manifest.json"


class TrainedModel(_Record):
    """A fine-tuned classifier: `model_dir` holds model.keras, history.json, vocab.txt,
    bert_config.json and train_config.json."""

    model_dir: str
    model_sha256: str  # of model.keras
    steps: int
    seconds: float
    init: str  # "checkpoint" or "scratch"
    max_seq_length: int
    do_lower_case: bool
    labels: tuple[str, ...]  # the class names, in logit order; () for a regression task
    task: str = "mrpc"
    pair: bool = True  # it reads sentence pairs (text_a, text_b), as the shards' manifest says

    @property
    def regression(self) -> bool:
        return not self.labels

    @property
    def keras_file(self) -> Path:
        return Path(self.model_dir) / "model.keras"

    @property
    def vocab_file(self) -> Path:
        return Path(self.model_dir) / "vocab.txt"

    @property
    def history_file(self) -> Path:
        return Path(self.model_dir) / "history.json"


class EvalReport(_Record):
    """Dev metrics and test predictions: `report_dir` holds metrics.json, dev_predictions.tsv,
    test_results.tsv, MRPC.tsv, confusion_matrix.png, roc_curve.png, loss_curve.png, summary.md."""

    report_dir: str
    metrics: dict[str, float]  # of dev, the split that promotes
    confusion_matrix: list[list[int]]  # of dev; [] for a regression task
    collapsed: bool
    collapse_reason: str | None = None
    splits: dict[str, dict[str, float]] = {}  # the metrics of other labeled splits (MNLI's
    # dev_mismatched), by split name


class ModelVersion(_Record):
    """What register hands back: the registered version and the promotion decision."""

    name: str
    version: str
    run_id: str
    tracking_uri: str = ""  # the store it was registered in
    aliases: tuple[str, ...]
    promoted: bool
    decision: str  # one line: why it was or was not promoted
    metric: str
    value: float
    champion_value: float | None = None
    code: str = ""  # promoted, not-better, not-significant, collapsed, parity-failed,
    # blocked-by-drift, no-op (the champion's own data: nothing trained)
