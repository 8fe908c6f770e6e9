"""Doctest collection for the packages: which modules are not imported, and no telemetry.

pyproject.toml runs the docstring examples of bert_core, data_contracts, tasks and flows
(`--doctest-modules`); collecting a module imports it, so a module whose import does something
is listed here instead.
"""

from __future__ import annotations

import os

collect_ignore = [
    "tasks/pyfunc_model.py",  # MLflow's models-from-code file: calls mlflow.models.set_model
]


def pytest_configure(config):
    # As tests/conftest.py does, for runs that collect only the packages (`pytest bert_core`).
    for name in ("PREFECT_SERVER_ANALYTICS_ENABLED", "GX_ANALYTICS_ENABLED"):
        os.environ[name] = "false"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
