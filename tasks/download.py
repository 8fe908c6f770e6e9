"""Download stage: the task's files and a pretrained checkpoint, all verified and cached.

    sources (public, pinned | mirror, pinned | user's own)  ->  home/cache/blobs/<sha256>
    MSR files -> home/data/mrpc/<key>/{train,dev,test}.tsv   (GLUE's split rule)
    a task's release zip or files -> home/data/<task>/<key>/  (the files its spec reads)
    release zip -> home/checkpoints/<sha256>/                 (safe extraction)
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
import urllib.parse
from pathlib import Path

from prefect import get_run_logger, task
from prefect.tasks import exponential_backoff

from bert_core.checkpoint import find_google_release
from tasks.archive import extract_zip
from tasks.atomic import publish_built
from tasks.caching import cached
from data_contracts.specs import TaskConfig, TaskSpec, task_spec
from data_contracts.specs.msr import MSR_FILES, SPLITS, build_glue_mrpc
from tasks.config import BERT_TINY_URL, DataConfig
from tasks.fetch import FetchError, Source, TransientFetchError, fetch, remove_stale_parts
from tasks.records import RawData, TaskData
from tasks.fingerprint import sha256_file, stamp, stamp_folder, unsealed
from tasks.retry import retry_on

_MSR_BASE = "https://dl.fbaipublicfiles.com/senteval/senteval_data/"
# name -> (public URL, sha256, bytes); the pins tensorflow-datasets' glue builder uses.
MRPC_PUBLIC = {
    "msr_paraphrase_train.txt": (
        _MSR_BASE + "msr_paraphrase_train.txt",
        "60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89", 1047044),
    "msr_paraphrase_test.txt": (
        _MSR_BASE + "msr_paraphrase_test.txt",
        "a04e271090879aaba6423d65b94950c089298587d9c084bf9cd7439bd785f784", 441275),
    "dev_ids.tsv": (
        "https://firebasestorage.googleapis.com/v0/b/mtl-sentence-representations.appspot.com/o/"
        "data%2Fmrpc_dev_ids.tsv?alt=media&token=ec5c0836-31d5-48f4-b431-7480817f1adc",
        "971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7", 6222),
}


def _join(base: str, name: str) -> str:
    if urllib.parse.urlsplit(base).scheme in ("http", "https", "file"):
        return base.rstrip("/") + "/" + urllib.parse.quote(name)
    return str(Path(base) / name)


def _local_dir(location: str) -> Path | None:
    source = Source("", location)
    path = source.local_path()
    return path if not source.is_remote and path.is_dir() else None


def mrpc_sources(cfg: DataConfig) -> tuple[str, list[Source]]:
    """("glue", three TSVs) or ("msr", the three MSR source files), resolved from the config."""
    if cfg.source is None:
        base = cfg.mirror
        return "msr", [Source(name, _join(base, name) if base else url, sha, size)
                       for name, (url, sha, size) in MRPC_PUBLIC.items()]
    folder = _local_dir(cfg.source)
    if folder and all((folder / f"{s}.tsv").is_file() for s in SPLITS):
        return "glue", [Source(f"{s}.tsv", str(folder / f"{s}.tsv")) for s in SPLITS]
    return "msr", [Source(name, _join(cfg.source, name)) for name in MSR_FILES]


def task_sources(task: TaskConfig, cfg: DataConfig) -> tuple[str, list[Source]]:
    """How the task's files arrive: ("msr", MRPC's source files), ("files", the task's files under
    their names in its data folder) or ("zip", one release zip holding them)."""
    spec = task_spec(task)
    if spec.name == "mrpc":
        kind, sources = mrpc_sources(cfg)
        return ("files" if kind == "glue" else kind), sources
    if spec.name == "custom":
        given = {"train": task.train, "dev": task.dev, "test": task.test}
        return "files", [Source(split.file, given[split.name]) for split in spec.splits
                         if given[split.name]]
    location = cfg.source
    if location is None:
        if spec.source is None:
            raise ValueError(f"task {spec.name} has no public default download: give data.source "
                             f"(--source), a folder or zip holding {', '.join(spec.files)}")
        name = spec.source.url.rsplit("/", 1)[1]
        return "zip", [Source(name, _join(cfg.mirror, name) if cfg.mirror else spec.source.url)]
    if location.split("?", 1)[0].lower().endswith(".zip"):
        return "zip", [Source(location.rstrip("/").rsplit("/", 1)[-1], location)]
    return "files", [Source(name, _join(location, name)) for name in spec.files]


def eval_set_sources(task: TaskConfig, eval_set: str | None) -> list[Source]:
    """The files of a pinned evaluation set: each evaluation split's file (dev.tsv; MNLI's two)
    under its name in `eval_set`. A custom task's evaluation set is its dev file (`on_eval_set`)."""
    if eval_set is None or task.name == "custom":
        return []
    return [Source(split.file, _join(eval_set, split.file))
            for split in task_spec(task).splits if split.role == "eval"]


def on_eval_set(task: TaskConfig, eval_set: str | None) -> TaskConfig:
    """A custom task with a pinned evaluation set reads it as its dev file."""
    if eval_set is None or task.name != "custom":
        return task
    return task.model_copy(update={"dev": eval_set})


def fetch_task(task: TaskConfig, cfg: DataConfig, home: Path, progress=None,
               eval_set: str | None = None) -> tuple[Path, dict[str, str]]:
    """The task's files in a folder named by their content (and the task config), and their
    sha256s by file name; with `eval_set`, its evaluation files in place of the source's."""
    out = _fetch_source(task, cfg, home, progress)
    pinned = eval_set_sources(task, eval_set)
    if pinned:
        blobs = [fetch(s, home / "cache", timeout=cfg.timeout_s, progress=progress)
                 for s in pinned]
        key = hashlib.sha256(" ".join([out.name, *(b.name for b in blobs)]).encode())
        merged = out.parent / f"{out.name}-eval-{key.hexdigest()[:12]}"
        if unsealed(merged):
            _copy_files({**{name: out / name for name in task_spec(task).files},
                         **{s.name: b for s, b in zip(pinned, blobs)}}, merged)
        out = merged
    return out, {name: sha256_file(out / name) for name in task_spec(task).files}


def _fetch_source(task: TaskConfig, cfg: DataConfig, home: Path, progress=None) -> Path:
    spec = task_spec(task)
    kind, sources = task_sources(task, cfg)
    blobs = [fetch(s, home / "cache", timeout=cfg.timeout_s, progress=progress) for s in sources]
    key = hashlib.sha256(" ".join([task.model_dump_json(), *(b.name for b in blobs)]).encode())
    out = home / "data" / spec.name / key.hexdigest()[:16]
    if unsealed(out):  # absent, or damaged: rebuilt whole
        if kind == "msr":
            publish_built(lambda tmp: build_glue_mrpc(blobs[0], blobs[1], blobs[2], tmp), out)
        elif kind == "zip":
            _unpack_release(blobs[0], sources[0].location, spec, out,
                            pinned=cfg.source is None)
        else:
            _copy_files({s.name: b for s, b in zip(sources, blobs)}, out)
    return out


def _unpack_release(blob: Path, location: str, spec: TaskSpec, out: Path, pinned: bool) -> None:
    """The task's files out of its release zip (at its root or in the release's folder), each
    checked against its pin when the zip is the public one."""
    (blob.parent.parent / "tmp").mkdir(exist_ok=True)  # cache/tmp, beside cache/blobs
    with tempfile.TemporaryDirectory(dir=blob.parent.parent / "tmp") as tmp:
        root = extract_zip(blob, Path(tmp) / "zip")
        folder = spec.source.folder if spec.source else ""
        found = {}
        for name in spec.files:
            candidates = [root / name, root / folder / name]
            path = next((p for p in candidates if p.is_file()), None)
            if path is None:
                raise FetchError(f"{location}: the zip holds no {folder}{name} (task {spec.name} "
                                 f"needs {', '.join(spec.files)})")
            pin = spec.source.sha256.get(name) if pinned and spec.source else None
            if pin and sha256_file(path) != pin:
                raise FetchError(f"{location}: {name}: sha256 mismatch: expected {pin}, got "
                                 f"{sha256_file(path)}")
            found[name] = path
        _copy_files(found, out)


def _copy_files(files: dict[str, Path], out: Path) -> None:
    """`files` (name in the data folder -> file) copied into `out`, created whole or not at all."""
    def copy(tmp: Path) -> None:
        for name, path in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tmp / name)
    publish_built(copy, out)


def checkpoint_source(cfg: DataConfig) -> Source:
    if cfg.checkpoint == BERT_TINY_URL and cfg.mirror:
        location = _join(cfg.mirror, BERT_TINY_URL.rsplit("/", 1)[1])
    else:
        location = cfg.checkpoint
    return Source(location.rstrip("/").rsplit("/", 1)[-1], location, cfg.checkpoint_sha256)


def fetch_checkpoint(cfg: DataConfig, home: Path, progress=None) -> tuple[Path, str]:
    """The release folder (extracted if it came as a zip) and the sha256 it was keyed by."""
    source = checkpoint_source(cfg)
    local = _local_dir(source.location)
    if local:
        return _release_root(local), _folder_sha256(local)
    blob = fetch(source, home / "cache", timeout=cfg.timeout_s, progress=progress)
    out = home / "checkpoints" / blob.name
    if unsealed(out):
        extract_zip(blob, out)
    return _release_root(out), blob.name


def _release_root(folder: Path) -> Path:
    if (folder / "model.safetensors").is_file():
        return folder  # Hugging Face layout
    return find_google_release(folder)


def _folder_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def download_data(cfg: DataConfig, home: Path, progress=None,
                  task: TaskConfig = TaskConfig(), eval_set: str | None = None) -> RawData:
    remove_stale_parts(home / "cache")
    data_dir, hashes = fetch_task(task, cfg, home, progress, eval_set)
    release, checkpoint_sha = fetch_checkpoint(cfg, home, progress)
    vocab = release / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"{cfg.checkpoint}: the checkpoint has no vocab.txt")
    files = (*(stamp(data_dir / name) for name in hashes), *stamp_folder(release))
    return RawData(data_dir=str(data_dir), task=task.name, checkpoint_dir=str(release),
                   vocab_file=str(vocab), sha256={**hashes, "checkpoint": checkpoint_sha},
                   files=files)


class _ProgressLog:
    """Logs bytes and rate every few seconds while a large file streams in."""

    def __init__(self, logger, every_s: float = 5.0):
        self.logger, self.every_s = logger, every_s
        self.start = self.last = time.monotonic()

    def __call__(self, received: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        rate = received / max(now - self.start, 1e-9) / 1e6
        of = f" of {total / 1e6:.1f}" if total else ""
        self.logger.info("downloaded %.1f%s MB (%.1f MB/s)", received / 1e6, of, rate)


def source_fingerprint(cfg: DataConfig, task: TaskConfig = TaskConfig(),
                       eval_set: str | None = None) -> str:
    """What the download depends on: the config, and the content of every local source (a local
    data drop edited in place must not be served from the cache)."""
    _, sources = task_sources(task, cfg)
    sources += eval_set_sources(task, eval_set)
    parts = [cfg.model_dump_json(), task.model_dump_json()]
    for source in [*sources, checkpoint_source(cfg)]:
        path = source.local_path()
        if source.is_remote:
            parts.append(f"{source.location} {source.sha256}")
        elif path.is_dir():
            parts.append(_folder_sha256(path))
        else:
            parts.append(sha256_file(path) if path.is_file() else f"missing {path}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


# Transient failures retried with backoff; cached by the sources' content (see above).
FETCH_TASK = dict(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
                  retry_jitter_factor=0.2, retry_condition_fn=retry_on(TransientFetchError),
                  **cached("download", __name__, ignore={"cfg": DataConfig.TRANSPORT},
                           extra_key=lambda inputs: source_fingerprint(
                               inputs["cfg"], inputs["task"], inputs.get("eval_set"))))


@task(name="download", **FETCH_TASK)
def download(task: TaskConfig, cfg: DataConfig, home: str, eval_set: str | None = None) -> RawData:
    """Fetch the task's files and the checkpoint into `home` (nothing is fetched twice); with
    `eval_set`, its evaluation files replace the source's."""
    logger = get_run_logger()
    raw = download_data(cfg, Path(home), progress=_ProgressLog(logger), task=task,
                        eval_set=eval_set)
    logger.info("%s data in %s; checkpoint in %s", task.name, raw.data_dir, raw.checkpoint_dir)
    return raw


@task(name="download", **FETCH_TASK)
def download_task_data(task: TaskConfig, cfg: DataConfig, home: str) -> TaskData:
    """Fetch the task's files alone (checking a data drop needs no checkpoint)."""
    remove_stale_parts(Path(home) / "cache")
    data_dir, hashes = fetch_task(task, cfg, Path(home), progress=_ProgressLog(get_run_logger()))
    return TaskData(data_dir=str(data_dir), task=task.name, sha256=hashes,
                    files=tuple(stamp(data_dir / name) for name in hashes))
