"""Prefect retry conditions: retry only the failures that trying again can fix."""

from __future__ import annotations

from collections.abc import Callable


def retry_on(*transient: type[BaseException]) -> Callable[..., bool]:
    """A `retry_condition_fn` that retries when the task raised one of `transient`, never else."""

    def condition(task, task_run, state) -> bool:
        try:
            state.result()
        except transient:
            return True
        except BaseException:  # noqa: BLE001 - anything else is final
            return False
        return False

    return condition
