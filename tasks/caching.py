"""Caches you can believe: a stage is reused only when everything that determines its output is
unchanged and what it recorded is still there.

    key = <stage>-sha256(the stage's code, transitively    tasks/fingerprint.py
                         the versions of the libraries that shape its output
                         its inputs by content, less the settings that cannot change the output)

Records passed between tasks carry content hashes (and `files`, the stamps of what they point
to), so hashing the inputs hashes content; the stamps themselves are left out of the key. Before a
recorded result is used it is checked: every file it names exists and matches its sha256 (size and
mtime spare a re-hash), and whatever else the stage asks (a registered version still exists). A
failed check expires the record through Prefect's result store, logs one line saying why, and the
stage runs again; its new output then decides what downstream reruns.

Results persist (Prefect caches only persisted results) under PREFECT_HOME, which the CLI sets to
`<home>/prefect`; `clear` drops them, all or by stage.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from pydantic import BaseModel

from tasks.config import STAGES
from tasks.fingerprint import code_fingerprint, library_versions, stale

Check = Callable[[Any], "str | None"]  # a recorded result -> why it cannot be used, or None


def keyable(value: Any, ignore: Iterable[str] = ()) -> Any:
    """What of an input goes into a key: a record or config as JSON without its file stamps and
    the ignored fields; anything else as it is."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude={"files", *ignore})
    return value


def recorded_files_check(result: Any) -> str | None:
    """A record's files are intact (results that name no files always pass)."""
    return stale(getattr(result, "files", ()))


def content_key(stage: str, module: str, libraries: tuple[str, ...], inputs: dict[str, Any],
                ignore: dict[str, tuple[str, ...]] | None = None) -> str:
    """`<stage>-<sha256>` over the code, the library versions and the inputs' content."""
    ignore = ignore or {}
    parts = {"code": code_fingerprint(module), "libraries": library_versions(libraries),
             "inputs": {name: keyable(value, ignore.get(name, ()))
                        for name, value in sorted(inputs.items())}}
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return f"{stage}-{hashlib.sha256(blob).hexdigest()[:32]}"


@dataclass
class Verified(CachePolicy):
    """Prefect cache policy: `content_key`, and a recorded result checked before it is trusted."""

    stage: str = ""
    module: str = ""
    libraries: tuple[str, ...] = ()
    ignore: dict[str, tuple[str, ...]] = field(default_factory=dict)
    checks: tuple[Check, ...] = (recorded_files_check,)
    extra_key: Callable[[dict[str, Any]], str] | None = None

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        extra = {"extra": self.extra_key(inputs)} if self.extra_key else {}
        key = content_key(self.stage, self.module, self.libraries, {**inputs, **extra},
                          self.ignore)
        store = task_ctx.result_store
        if store is not None and store.exists(key):
            result = store.read(key).result
            reason = next((r for r in (check(result) for check in self.checks) if r), None)
            if reason:
                get_run_logger().warning("%s: the cached result cannot be used (%s); running it "
                                         "again", self.stage, reason)
                expired = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(1)
                store.write(obj=result, key=key, expiration=expired)
        return key


def cached(stage: str, module: str, libraries: tuple[str, ...] = (), **policy: Any) -> dict:
    """The @task options of a stage cached by `Verified`."""
    return dict(cache_policy=Verified(stage=stage, module=module, libraries=libraries, **policy),
                persist_result=True)


def refreshing() -> bool:
    """True inside a task run told to refresh its cache (`bertflow run --rerun STAGE`): the stage
    rebuilds its output folder instead of reusing an intact one."""
    context = TaskRunContext.get()
    return bool(context and context.task.refresh_cache)


def stages_from(stage: str | None) -> tuple[str, ...]:
    """The stages `--rerun stage` runs again: it and every one after it.

    >>> stages_from("train")
    ('train', 'evaluate', 'register')
    >>> stages_from(None)
    ()
    """
    if stage is None:
        return ()
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: one of {', '.join(STAGES)}")
    return STAGES[STAGES.index(stage):]


def clear(storage: Path, stages: Iterable[str] = STAGES) -> int:
    """Drop the recorded results of `stages` from Prefect's result storage folder; returns how
    many. Outputs on disk stay (a stage reuses an intact folder of the same content)."""
    wanted = tuple(f"{stage}-" for stage in stages)
    dropped = 0
    for record in storage.glob("*") if storage.is_dir() else ():
        if record.is_file() and record.name.startswith(wanted):
            record.unlink()
            dropped += 1
    return dropped
