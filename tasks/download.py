"""Download stage: MRPC as GLUE's three TSVs, and a pretrained checkpoint, all verified and cached.

    sources (public, pinned | mirror, pinned | user's own)  ->  home/cache/blobs/<sha256>
    MSR files -> home/data/mrpc/<key>/{train,dev,test}.tsv   (GLUE's split rule)
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
from tasks.atomic import publish_dir
from tasks.caching import cached
from tasks.config import BERT_TINY_URL, DataConfig
from tasks.fetch import Source, TransientFetchError, fetch, remove_stale_parts
from tasks.mrpc import MSR_FILES, SPLITS, build_glue_mrpc
from tasks.records import MrpcData, RawData
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
    if cfg.mrpc_source is None:
        base = cfg.mirror
        return "msr", [Source(name, _join(base, name) if base else url, sha, size)
                       for name, (url, sha, size) in MRPC_PUBLIC.items()]
    folder = _local_dir(cfg.mrpc_source)
    if folder and all((folder / f"{s}.tsv").is_file() for s in SPLITS):
        return "glue", [Source(f"{s}.tsv", str(folder / f"{s}.tsv")) for s in SPLITS]
    return "msr", [Source(name, _join(cfg.mrpc_source, name)) for name in MSR_FILES]


def checkpoint_source(cfg: DataConfig) -> Source:
    if cfg.checkpoint == BERT_TINY_URL and cfg.mirror:
        location = _join(cfg.mirror, BERT_TINY_URL.rsplit("/", 1)[1])
    else:
        location = cfg.checkpoint
    return Source(location.rstrip("/").rsplit("/", 1)[-1], location, cfg.checkpoint_sha256)


def fetch_mrpc(cfg: DataConfig, home: Path, progress=None) -> tuple[Path, dict[str, str]]:
    """GLUE's train/dev/test.tsv in a folder named by their content, and their sha256s."""
    kind, sources = mrpc_sources(cfg)
    cache = home / "cache"
    blobs = [fetch(s, cache, timeout=cfg.timeout_s, progress=progress) for s in sources]
    key = hashlib.sha256(" ".join(b.name for b in blobs).encode()).hexdigest()[:16]
    out = home / "data" / "mrpc" / key
    if unsealed(out):  # absent, or damaged: rebuilt whole
        if kind == "glue":
            _copy_glue(blobs, out)
        else:
            build_glue_mrpc(blobs[0], blobs[1], blobs[2], out)
    return out, {f"{s}.tsv": sha256_file(out / f"{s}.tsv") for s in SPLITS}


def _copy_glue(blobs: list[Path], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for split, blob in zip(SPLITS, blobs):
            shutil.copyfile(blob, tmp / f"{split}.tsv")
        publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def download_data(cfg: DataConfig, home: Path, progress=None) -> RawData:
    remove_stale_parts(home / "cache")
    glue_dir, hashes = fetch_mrpc(cfg, home, progress)
    release, checkpoint_sha = fetch_checkpoint(cfg, home, progress)
    vocab = release / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"{cfg.checkpoint}: the checkpoint has no vocab.txt")
    files = (*(stamp(glue_dir / f"{s}.tsv") for s in SPLITS), *stamp_folder(release))
    return RawData(glue_dir=str(glue_dir), checkpoint_dir=str(release), vocab_file=str(vocab),
                   sha256={**hashes, "checkpoint": checkpoint_sha}, files=files)




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


def source_fingerprint(cfg: DataConfig) -> str:
    """What the download depends on: the config, and the content of every local source (a local
    data drop edited in place must not be served from the cache)."""
    _, sources = mrpc_sources(cfg)
    parts = [cfg.model_dump_json()]
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
                           extra_key=lambda inputs: source_fingerprint(inputs["cfg"])))


@task(name="download", **FETCH_TASK)
def download(cfg: DataConfig, home: str) -> RawData:
    """Fetch MRPC and the checkpoint into `home` (nothing is fetched twice)."""
    logger = get_run_logger()
    raw = download_data(cfg, Path(home), progress=_ProgressLog(logger))
    logger.info("MRPC in %s; checkpoint in %s", raw.glue_dir, raw.checkpoint_dir)
    return raw


@task(name="download", **FETCH_TASK)
def download_mrpc(cfg: DataConfig, home: str) -> MrpcData:
    """Fetch MRPC alone (checking a data drop needs no checkpoint)."""
    remove_stale_parts(Path(home) / "cache")
    glue_dir, hashes = fetch_mrpc(cfg, Path(home), progress=_ProgressLog(get_run_logger()))
    return MrpcData(glue_dir=str(glue_dir), sha256=hashes,
                    files=tuple(stamp(glue_dir / f"{s}.tsv") for s in SPLITS))
