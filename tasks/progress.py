"""Progress inside Prefect runs: the run logger, and a progress artifact that the UI draws
(bert_core/progress.py has the pure pieces). Both helpers return plain callables, so the code
they are handed to stays Prefect-free.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bert_core.progress import Report


def run_log(fallback: logging.Logger) -> Callable[[str], None]:
    """The Prefect run logger inside a flow or task run (its lines reach the UI), else
    `fallback`'s info."""
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.logging import get_run_logger

    if TaskRunContext.get() or FlowRunContext.get():
        return get_run_logger().info
    return fallback.info


def task_progress(key: str, description: str) -> Report | None:
    """Inside a Prefect task run: a progress artifact (`key`) at 0%, and the callable that moves
    it; outside one, None. An API error while updating is logged once and further updates are
    dropped: the UI's bar is not worth a failed training run."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact
    from prefect.context import TaskRunContext
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.logging import get_run_logger
    from httpx import HTTPError

    if TaskRunContext.get() is None:
        return None
    artifact = create_progress_artifact(0.0, key=key, description=description)
    broken: list[str] = []

    def report(percent: float, line: str) -> None:
        if broken:
            return
        try:
            update_progress_artifact(artifact, min(max(percent, 0.0), 100.0), description=line)
        except (HTTPError, PrefectHTTPStatusError) as error:
            broken.append(str(error))
            get_run_logger().warning("progress artifact %s: updates stopped (%s)", key, error)

    return report
