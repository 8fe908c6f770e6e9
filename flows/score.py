"""The score flow: one file through the registered classifier, into a Parquet file of answers.

    model-version (the champion, or the URI given, pinned to one version) -> score
"""

from __future__ import annotations

from prefect import flow

from tasks.score import ScoreConfig, ScoreSummary, model_version, score


@flow(name="score")
def score_file(cfg: ScoreConfig) -> ScoreSummary:
    """Score cfg.input with one version of the task's model (default: its champion) into
    cfg.output; rows with no text go to the rejects file beside it."""
    uri, version = model_version(cfg)
    return score(cfg, uri, version)
