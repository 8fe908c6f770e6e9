"""The drift check before training: the drop's training data profiled and compared with the
profile stored with the champion (tasks/profile.py, tasks/drift.py).

    profile_data   home/profiles/<key>/profile.json      logged with the version as data/profile.json
    check_drift    home/drift/<key>/{drift.md, drift.json, drift.png}
                   a Prefect artifact; when a check blocks, an MLflow run `drift-<drop>` holding
                   the report and the registered model's bertflow.last.* tags say so
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from bert_core.tokenization import FullTokenizer
from data_contracts.specs import TaskConfig, task_spec
from tasks.atomic import publish_built
from tasks.caching import cached
from tasks.config import DriftConfig, ModelConfig, RegistryConfig
from tasks.drift import DriftReport, compare, plot
from tasks.fingerprint import stamp, stamp_folder, unsealed
from tasks.incumbent import Examples, Incumbent, champion_profile
from tasks.mlflow_store import open_store, transient_errors, tracking_uri
from tasks.profile import DataProfile, overlap_share, profile_examples
from tasks.promotion import record_outcome
from tasks.records import RawData, _Record

PROFILE = "profile.json"
TRAIN = "train"


class ProfileFile(_Record):
    path: str  # .../profile.json


class DriftOutcome(_Record):
    """The comparison's verdict; `report_dir` is empty when there was nothing to compare with."""

    report_dir: str = ""
    blocked: bool = False
    summary: str
    breached: tuple[str, ...] = ()

    @property
    def report_files(self) -> list[str]:
        if not self.report_dir:
            return []
        return [str(Path(self.report_dir) / name) for name in ("drift.md", "drift.png")]


@task(name="profile", **cached("profile", __name__))
def profile_data(raw: RawData, task_cfg: TaskConfig, model: ModelConfig, home: str) -> ProfileFile:
    """The training data's profile under the model's vocabulary and sequence length."""
    spec = task_spec(task_cfg)
    train = spec.read_split(Path(raw.data_dir), TRAIN)
    tokenizer = FullTokenizer(raw.vocab_file, model.do_lower_case)
    profile = profile_examples(train, tokenizer, model.max_seq_length, spec.regression,
                               spec.score_range)
    key = hashlib.sha256(profile.model_dump_json().encode()).hexdigest()[:16]
    out = Path(home) / "profiles" / key
    if unsealed(out):
        publish_built(lambda tmp: (tmp / PROFILE).write_text(profile.model_dump_json(indent=1)), out)
    return ProfileFile(path=str(out / PROFILE), files=(stamp(out / PROFILE),))


def drift_report(before: DataProfile, after: DataProfile, raw: RawData, task_cfg: TaskConfig,
                 examples: Examples, cfg: DriftConfig, drop: str) -> DriftReport:
    import pandas as pd

    train = task_spec(task_cfg).read_split(Path(raw.data_dir), TRAIN)
    overlap = overlap_share(train, pd.read_parquet(examples.path))
    return compare(before, after, cfg, eval_overlap=overlap, drop=drop)


def _write_report(report: DriftReport, before: DataProfile, after: DataProfile, title: str,
                  folder: Path) -> None:
    (folder / "drift.md").write_text(report.markdown(title))
    (folder / "drift.json").write_text(report.to_json())
    plot(before, after, folder / "drift.png")


def _log_blocked(report_dir: Path, summary: str, registry: RegistryConfig, home: str,
                 lineage: dict[str, str]) -> str:
    """An MLflow run holding the report, and the registered model's last outcome: blocked."""
    with transient_errors(tracking_uri(registry, Path(home))):
        client, experiment_id = open_store(registry, Path(home))
        name = f"drift-{lineage.get('drop') or lineage.get('data.digest', '')[:8]}"
        run_id = client.create_run(experiment_id, run_name=name, tags={
            **lineage, "bertflow.outcome": "blocked-by-drift"}).info.run_id
        client.log_artifacts(run_id, str(report_dir), "drift")
        client.set_terminated(run_id)
        record_outcome(client, registry.model_name, {
            "code": "blocked-by-drift", "reason": summary, "run_id": run_id,
            "drop": lineage.get("drop", "")})
    return run_id


@task(name="drift", **cached("drift", __name__, ignore={"incumbent": ("tags",)}))
def check_drift(profile: ProfileFile, incumbent: Incumbent | None, raw: RawData,
                task_cfg: TaskConfig, examples: Examples, cfg: DriftConfig,
                registry: RegistryConfig, home: str, lineage: dict[str, str]) -> DriftOutcome:
    """The drop against the data the champion was trained on; blocked when a check says so."""
    logger = get_run_logger()
    before = champion_profile(incumbent) if incumbent and cfg.enabled else None
    if before is None:
        why = "no champion" if incumbent is None else f"{incumbent.label} has no data profile"
        return DriftOutcome(summary=f"drift not checked: {why}" if cfg.enabled
                            else "drift check disabled")
    after = DataProfile.model_validate_json(Path(profile.path).read_text())
    before = DataProfile.model_validate(before)
    drop = lineage.get("drop", "")
    report = drift_report(before, after, raw, task_cfg, examples, cfg, drop)
    title = f"Drop {drop or '(data.source)'} against the training data of {incumbent.label}"
    key = hashlib.sha256(f"{profile.path} {incumbent.model_id} {cfg}".encode()).hexdigest()[:16]
    out = Path(home) / "drift" / key
    if unsealed(out):
        publish_built(lambda tmp: _write_report(report, before, after, title, tmp), out)
    breached = tuple(f"{c.name} ({c.status}): {c.detail}" for c in report.breached)
    verdict = "blocked" if report.blocked else ("warnings" if breached else "no drift")
    summary = f"drift {verdict} against {incumbent.label}" + (
        f": {'; '.join(breached)}" if breached else "")
    create_markdown_artifact(key="data-drift", markdown=(out / "drift.md").read_text(),
                             description=summary[:500])
    (logger.warning if breached else logger.info)("%s", summary)
    if report.blocked:
        _log_blocked(out, summary, registry, home, lineage)
    return DriftOutcome(report_dir=str(out), blocked=report.blocked, summary=summary,
                        breached=breached, files=tuple(stamp_folder(out)))
