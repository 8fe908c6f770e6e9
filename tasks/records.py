"""The small records tasks hand each other: paths plus the content hashes that key caching."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)


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
    labels: tuple[str, ...]

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
    metrics: dict[str, float]
    confusion_matrix: list[list[int]]
    collapsed: bool
    collapse_reason: str | None = None


class ModelVersion(_Record):
    """What register hands back: the registered version and the promotion decision."""

    name: str
    version: str
    run_id: str
    aliases: tuple[str, ...]
    promoted: bool
    decision: str
    metric: str
    value: float
    champion_value: float | None = None
