"""What the `bertflow` process prints on the terminal.

Without --verbose a person sees Prefect's progress lines and, when something fails, one message
from the CLI at the end; tracebacks and TensorFlow's start-up lines stay off the terminal. The
traceback still reaches Prefect: the flow and task run loggers send every record, exc_info
included, to the API (`prefect logs`, the UI), before it reaches the console handler set here.
With --verbose everything is shown, as Python and TensorFlow print it.
"""

from __future__ import annotations

import copy
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

FORMAT = "%(levelname)s %(name)s: %(message)s"
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
RETRY_TEMPLATE = "Task run failed with %s: %r - Retry"  # prefect/task_engine.py, 3.x

# TensorFlow's C++ logging (absl): "I0000 00:00:1796117526.424718 3855 port.cc:153] oneDNN ...",
# and the line absl prints before it is initialised. TF_CPP_MIN_LOG_LEVEL=3 drops those written
# after `import tensorflow` (the `E0000 ... failed call to cuInit` of a machine without a GPU),
# not those written during it.
ABSL_LINE = re.compile(r"^([IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]|WARNING: All log "
                       r"messages before absl::InitializeLog\(\) is called)")
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3",
             # MLflow's INFO lines ("Creating initial MLflow database tables...") and its
             # progress bars for artifacts it reads back while registering
             "MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
# Logged on purpose: the pipeline gives MLflow a signature instead (see pyproject.toml).
EXPECTED_WARNINGS = (r".*An input example was not provided",)


class RunFormatter(logging.Formatter):
    """FORMAT, with a flow or task run's record named by the run ("INFO train-5f2: ...")
    instead of Prefect's logger ("INFO prefect.task_runs: ...")."""

    def __init__(self):
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        run = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None)
        if run and record.name.startswith(RUN_LOGGERS):
            record = copy.copy(record)  # other handlers (Prefect's API one) keep the original
            record.name = run
        return super().format(record)


class BriefFormatter(RunFormatter):
    """RunFormatter without the traceback, and a run's final state without its repeated reason:
    "Finished in state Failed('Task run encountered an exception ...')" reads "Finished in state
    Failed" (the CLI prints the reason once, at the end)."""

    def format(self, record: logging.LogRecord) -> str:
        brief = copy.copy(record)
        brief.exc_info, brief.exc_text, brief.stack_info = None, None, None
        brief.msg, brief.args = _retry_line(record) or _without_reason(record.getMessage()), None
        return super().format(brief)


def _retry_line(record: logging.LogRecord) -> str | None:
    """Prefect's "Task run failed with exception: <repr> - Retry 1/3 will start ..." with the
    exception's text clipped to one short line."""
    if not (isinstance(record.msg, str) and record.msg.startswith(RETRY_TEMPLATE)
            and isinstance(record.args, tuple) and len(record.args) == 5):
        return None
    _, err, attempt, retries, when = record.args
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    text = text if len(text) <= 120 else text[:119] + "…"
    return f"Task run failed ({text}) - retry {attempt}/{retries} will start {when}"


def _without_reason(message: str) -> str:
    """A final-state line without the state's message.

    >>> _without_reason("Finished in state Failed('Task run encountered an exception')")
    'Finished in state Failed'
    """
    if message.startswith("Finished in state ") and "(" in message:
        return message.split("(", 1)[0]
    return message


def drop_failure_reports(record: logging.LogRecord) -> bool:
    """Prefect's own reports of a failed flow or task run (an ERROR with the traceback): the
    CLI states the failure once, naming the user's file and what to do."""
    return not (record.name.startswith(RUN_LOGGERS) and record.levelno >= logging.ERROR)


class ConsoleHandler(logging.StreamHandler):
    """The CLI's terminal handler on the root logger (one per process: a new one replaces it).
    It writes to whatever sys.stderr is at the time (a test runner swaps it per command)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass  # always sys.stderr


def configure(verbose: bool) -> None:
    """Console logging for the CLI process, set before Prefect is imported: Prefect then keeps
    this handler on the root logger instead of its own console handler."""
    handler = ConsoleHandler()
    if verbose:
        handler.setFormatter(RunFormatter())
    else:
        handler.setFormatter(BriefFormatter())
        handler.addFilter(drop_failure_reports)
        for name, value in QUIET_ENV.items():
            os.environ.setdefault(name, value)
        for message in EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        quiet_import("tensorflow")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, ConsoleHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)


@contextmanager
def stderr_filtered(drop: re.Pattern = ABSL_LINE) -> Iterator[None]:
    """Hold what is written to file descriptor 2 (C libraries included) for the block, then
    write it out less the lines `drop` matches."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(True)
                    if not drop.match(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


class _FilteredLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with stderr_filtered():
            self.loader.exec_module(module)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds `name` as usual, once, and imports it under `stderr_filtered`."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredLoader(spec.loader)
        return spec


def quiet_import(name: str) -> None:
    """Whenever this process first imports `name` (TensorFlow: where a model is built, in
    whichever task), its C++ start-up lines are dropped from the terminal."""
    if name not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport(name))
