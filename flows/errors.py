"""The one message a person reads when a command fails: what broke, in which of *their* files,
URLs or stores, and what to do about it.

    >>> from tasks.fetch import FetchError
    >>> print(explain(FetchError("http://mirror/msr_paraphrase_train.txt: HTTP 404 Not Found")))
    http://mirror/msr_paraphrase_train.txt: HTTP 404 Not Found
      nothing is at that address: check --source, --mirror or --checkpoint

Pipeline errors name the copies the pipeline works on (home/data/<task>/<key>/train.tsv,
home/cache/blobs/<sha256>, home/checkpoints/<sha256>/); `name_sources` puts back the file or URL
the user gave. `explain` returns None for an error nobody anticipated (a bug): its traceback
matters, and the caller shows it.
"""

from __future__ import annotations

import re
from pathlib import Path

from data_contracts.specs import TaskConfig
from tasks.config import DataConfig

VERBOSE_HINT = "--verbose shows the traceback; the flow run's logs in Prefect hold it too"


class NoModelError(LookupError):
    """No model to serve; the message lists what the store holds (see `no_model`)."""


def explain(err: BaseException, data: DataConfig | None = None,
            home: str | Path | None = None, task: TaskConfig = TaskConfig()) -> str | None:
    """`err` as one message naming the user's source and what to do; None if unexpected."""
    for kind, advice in _advisers():
        if isinstance(err, kind):
            message = advice(err)
            if message is not None:
                return name_sources(message, data, home, task) if data and home else message
    return None


def unexpected(err: BaseException) -> str:
    """What is printed for an error `explain` does not know."""
    return f"{type(err).__name__}: {err}\n  unexpected error: {VERBOSE_HINT}"


def _advisers():
    """(exception type, message or None) in the order they are tried; imported on a failure
    only (the registry's brings in MLflow)."""
    from bert_core.checkpoint import CheckpointError
    from data_contracts.errors import ContractViolation
    from mlflow.exceptions import MlflowException
    from tasks.archive import ArchiveError
    from tasks.fetch import FetchError, TransientFetchError
    from tasks.mlflow_store import TransientRegistryError
    from data_contracts.specs.msr import MrpcSourceError

    return [(NoModelError, str), (ContractViolation, _contract), (TransientFetchError, _transient_fetch),
            (FetchError, _fetch), (TransientRegistryError, _registry_down),
            (MlflowException, _mlflow), (MrpcSourceError, _with("fix the file and run again")),
            ((CheckpointError, ArchiveError),
             _with("give a Google BERT release (zip or folder) or a Hugging Face folder with "
                   "--checkpoint")),
            (FileNotFoundError, lambda err: str(err))]


def _with(advice: str):
    return lambda err: f"{err}\n  {advice}"


def _contract(err) -> str:
    rules = {failure.expectation for failure in err.failures}
    if "expect_table_row_count_to_be_between" in rules:
        advice = ("if the row count is right for this data, widen data.row_bounds in a "
                  "--config file")
    else:
        advice = "fix the file (or give another --source) and run again"
    return f"{err}\n  {advice}"


def _transient_fetch(err) -> str:
    return f"{err}\n  still failing after retries: check the network and the server, then run again"


def _fetch(err) -> str:
    text = str(err)
    if "HTTP 404" in text:
        return (f"{text}\n  nothing is at that address: check --source, --mirror or "
                "--checkpoint")
    if "mismatch" in text:
        return (f"{text}\n  the file is not the one pinned: fix the copy at that address, or "
                "pin the file you trust with --checkpoint-sha256")
    return f"{text}\n  check the path or URL and run again"


def _registry_down(err) -> str:
    uri, _, detail = str(err).partition(": ")
    reason = re.search(r"\[Errno -?\d+\] [^'\")]+", detail)
    return (f"the MLflow tracking server {uri} did not answer after retries"
            f" ({reason.group(0) if reason else _clip(detail)})\n"
            "  start it (or give another --tracking-uri) and run again: the trained model is "
            "kept, so the rerun registers it without training")


def _mlflow(err) -> str | None:
    if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
        return None
    run = re.search(r"Run with id=(\w+) not found", err.message)
    if run:
        return (f"the MLflow store has no run {run.group(1)}: it was deleted, or this is not the "
                "store the pipeline logged to (--tracking-uri)\n"
                "  run again with --rerun register to log and register the model anew")
    return f"MLflow: {err.message}"


def _clip(text: str, width: int = 160) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def name_sources(message: str, data: DataConfig, home: str | Path,
                 task: TaskConfig = TaskConfig()) -> str:
    """`message` with each of the pipeline's working copies replaced by the source it came from.

    >>> data = DataConfig(source="/drops/msr")
    >>> print(name_sources("/h/data/mrpc/0123abcd/dev.tsv: bad", data, "/h"))
    dev.tsv (the pairs of /drops/msr/dev_ids.tsv in /drops/msr/msr_paraphrase_train.txt): bad
    """
    root = re.escape(str(home).rstrip("/"))
    message = re.sub(root + rf"/data/{task.name}/[0-9a-f]+/([^\s:,]+)",
                     lambda m: file_source(task, data, m.group(1)), message)
    if re.search(root + r"/(cache/blobs|checkpoints)/", message):
        names = _blob_sources(task, data, Path(home))
        message = re.sub(root + r"/cache/blobs/([0-9a-f]{64})",
                         lambda m: names.get(m.group(1), m.group(0)), message)
        message = re.sub(root + r"/checkpoints/([0-9a-f]{64})",
                         lambda m: f"{names[m.group(1)]} (unzipped)" if m.group(1) in names
                         else m.group(0), message)
    return message


def file_source(task: TaskConfig, data: DataConfig, name: str) -> str:
    """Which of the user's files (or URLs) a file of the task's data folder is, or is made
    from."""
    from tasks.download import task_sources

    kind, sources = task_sources(task, data)
    where = {source.name: source.location for source in sources}
    if kind == "files":
        return where.get(name, name)
    if kind == "zip":
        return f"{name} in {sources[0].location}"
    train, test, dev_ids = (where[name] for name in (
        "msr_paraphrase_train.txt", "msr_paraphrase_test.txt", "dev_ids.tsv"))
    return {"train.tsv": f"train.tsv ({train} less the pairs of {dev_ids})",
            "dev.tsv": f"dev.tsv (the pairs of {dev_ids} in {train})",
            "test.tsv": f"test.tsv (made from {test})"}.get(name, name)


def _blob_sources(task: TaskConfig, data: DataConfig, home: Path) -> dict[str, str]:
    """{sha256 of a cached copy: the location it was fetched from} for the configured sources."""
    from tasks.download import checkpoint_source, task_sources
    from tasks.fetch import cached_path
    from tasks.fingerprint import sha256_file

    names = {}
    for source in [*task_sources(task, data)[1], checkpoint_source(data)]:
        if source.is_remote:
            blob = cached_path(source, home / "cache")
            sha = blob.name if blob else source.sha256
        else:
            path = source.local_path()
            sha = sha256_file(path) if path.is_file() else None
        if sha:
            names[sha] = source.location
    return names


def no_model(model_uri: str | None, err, tracking_uri: str, model_name: str) -> str:
    """Why `predict` has no model to load, the versions and aliases the store does hold, and how
    to pick one."""
    if "No such artifact" in err.message:
        return (f"{model_uri or f'the champion of {model_name}'}: {tracking_uri} lists it, but "
                "its files are gone from the store's artifacts\n  run the pipeline again with "
                "--rerun register to log and register the model anew")
    if model_uri is None:
        head = (f"no champion yet: no version of {model_name} in {tracking_uri} has been "
                "promoted (alias champion)")
    else:
        head = f"{model_uri}: {err.message} in {tracking_uri}"
    listing = registered_versions(tracking_uri)
    lines = [head, *(f"  {line}" for line in listing)] if listing else [
        head, f"  the store holds no registered model: `bertflow run` registers {model_name}"]
    example = re.search(r"^(\S+): version (\d+)", listing[0]) if listing else None
    uri = f"models:/{example.group(1)}/{example.group(2)}" if example else "models:/NAME/VERSION"
    lines.append(f"  choose one with --model-uri, e.g. --model-uri {uri}")
    return "\n".join(lines)


def registered_versions(tracking_uri: str) -> list[str]:
    """One line per registered model: 'bertflow-mrpc: version 2 [challenger], version 1'."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    lines = []
    for model in client.search_registered_models():
        aliases: dict[str, list[str]] = {}
        for alias, version in sorted(model.aliases.items()):
            aliases.setdefault(str(version), []).append(alias)
        versions = sorted((int(v.version) for v in client.search_model_versions(
            f"name = '{model.name}'")), reverse=True)
        lines.append(f"{model.name}: " + ", ".join(
            f"version {v}" + (f" [{', '.join(aliases[str(v)])}]" if str(v) in aliases else "")
            for v in versions))
    return lines
