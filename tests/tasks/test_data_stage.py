"""The data stage as users run it: a real Prefect flow against a loopback server, faults injected."""

from __future__ import annotations

import filecmp
import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from prefect import flow

from bert_core.inputs import read_shard
from data_contracts.errors import ContractViolation
from flows.data import prepare
from tasks.archive import ArchiveError
from data_contracts.specs import TaskConfig
from tasks.config import DataConfig, RowBounds
from tasks.download import download
from tasks.fetch import FetchError
from tests.artifacts import flow_artifact
from tests.conftest import GOLDEN_IDS
from tests.fixtures import write_msr_files, write_release_zip

pytestmark = pytest.mark.usefixtures("prefect_api")
TINY_BOUNDS = RowBounds(train=(1, 100), dev=(1, 100), test=(1, 100))
MSR = ("msr_paraphrase_train.txt", "msr_paraphrase_test.txt", "dev_ids.tsv")


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    return write_release_zip(tmp_path_factory.mktemp("release") / "tiny.zip", inside="tiny/")


@pytest.fixture
def served(loopback, tmp_path, tiny_release):
    """Generated MSR files and the tiny release on the loopback server."""
    for path in write_msr_files(tmp_path / "msr").iterdir():
        loopback.add(f"/msr/{path.name}", path.read_bytes())
    loopback.add("/tiny.zip", tiny_release.read_bytes())
    return DataConfig(source=loopback.url + "/msr", checkpoint=loopback.url + "/tiny.zip",
                      row_bounds=TINY_BOUNDS)


@flow
def download_only(cfg: DataConfig, home: str):
    return download(TaskConfig(), cfg, home)


@pytest.mark.shared
def test_whole_data_stage_from_a_mirror_then_from_cache(shared, loopback, tmp_path):
    mrpc = shared / "data" / "mrpc"
    for name in MSR:
        loopback.add(f"/mirror/{name}", (mrpc / name).read_bytes())
    zip_path = shared / "checkpoints" / "minilm-l3-h384-uncased.zip"
    url = loopback.add("/minilm.zip", zip_path.read_bytes())
    cfg = DataConfig(mirror=loopback.url + "/mirror", checkpoint=url,
                     checkpoint_sha256=hashlib.sha256(zip_path.read_bytes()).hexdigest())
    shards = prepare(cfg, home=str(tmp_path))
    assert shards.rows == {"train": 3668, "dev": 408, "test": 1725}
    glue = next((tmp_path / "data" / "mrpc").iterdir())
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        assert filecmp.cmp(glue / name, mrpc / name, shallow=False), name
    manifest = json.loads(shards.manifest.read_text())
    for split, entry in manifest["splits"].items():
        assert entry["rows"] == shards.rows[split] == sum(s["rows"] for s in entry["shards"])
        for s in entry["shards"]:
            for kind in ("parquet", "tfrecord"):
                data = (Path(shards.shard_dir) / s[kind]).read_bytes()
                assert hashlib.sha256(data).hexdigest() == s[f"{kind}_sha256"]
    features, table = read_shard(Path(shards.shard_dir) / "dev-00000-of-00001.parquet")
    assert table.column("guid")[0].as_py() == "dev-1"
    assert features.input_ids[0, :len(GOLDEN_IDS)].tolist() == GOLDEN_IDS
    served = len(loopback.requests)
    assert served == 4
    assert prepare(cfg, home=str(tmp_path)) == shards
    assert len(loopback.requests) == served  # the second run asked the server for nothing


@pytest.mark.parametrize("fault", ["500", "drop"])
def test_transient_fault_is_retried_by_prefect(served, loopback, tmp_path, fault):
    loopback.fail("/msr/msr_paraphrase_train.txt", fault)
    raw = download_only(served, str(tmp_path))
    assert loopback.requests.count("/msr/msr_paraphrase_train.txt") == 2
    assert len((Path(raw.data_dir) / "train.tsv").read_text(encoding="utf-8").splitlines()) > 1


@pytest.mark.shared
def test_truncated_body_of_a_pinned_file_is_retried(shared, loopback, tmp_path):
    for name in MSR:
        loopback.add(f"/mirror/{name}", (shared / "data" / "mrpc" / name).read_bytes())
    loopback.fail("/mirror/msr_paraphrase_test.txt", "truncate")
    cfg = DataConfig(mirror=loopback.url + "/mirror",
                     checkpoint=str(shared / "checkpoints" / "minilm-l3-h384-uncased-hf"))
    raw = download_only(cfg, str(tmp_path))
    assert loopback.requests.count("/mirror/msr_paraphrase_test.txt") == 2
    assert raw.sha256["test.tsv"].startswith("aee460ce")


def test_checksum_mismatch_fails_at_once_naming_url_and_hashes(served, loopback, tmp_path,
                                                              tiny_release):
    want = hashlib.sha256(tiny_release.read_bytes()).hexdigest()
    loopback.fail("/tiny.zip", "corrupt")
    cfg = served.model_copy(update={"checkpoint_sha256": want})
    state = download_only(cfg, str(tmp_path), return_state=True)
    assert state.is_failed()
    with pytest.raises(FetchError, match=f"tiny.zip: sha256 mismatch: expected {want}, got "):
        state.result()
    assert loopback.requests.count("/tiny.zip") == 1  # final: no retries
    assert not list((tmp_path / "cache" / "blobs").glob(want))


def test_not_found_fails_at_once(served, loopback, tmp_path):
    cfg = served.model_copy(update={"checkpoint": loopback.url + "/nope.zip"})
    state = download_only(cfg, str(tmp_path), return_state=True)
    with pytest.raises(FetchError, match="nope.zip: HTTP 404"):
        state.result()
    assert loopback.requests.count("/nope.zip") == 1


def test_zip_escaping_its_folder_is_rejected(served, loopback, tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("bert_config.json", "{}")
        zf.writestr("../evil", "gotcha")
    cfg = served.model_copy(update={"checkpoint": loopback.add("/evil.zip", evil.read_bytes())})
    state = download_only(cfg, str(tmp_path / "home"), return_state=True)
    with pytest.raises(ArchiveError, match="'../evil' escapes the extraction folder"):
        state.result()
    assert not (tmp_path / "home" / "evil").exists()
    assert not list((tmp_path / "home").glob("checkpoints/*"))


def test_broken_data_drop_stops_the_flow_before_tokenizing(served, loopback, tmp_path):
    train = loopback.files["/msr/msr_paraphrase_train.txt"].decode("utf-8").splitlines(True)
    fields = train[2].split("\t")
    train[2] = "\t".join(["2", *fields[1:]])  # label 2
    loopback.add("/msr/msr_paraphrase_train.txt", "".join(train).encode("utf-8"))
    state = prepare(served, home=str(tmp_path), return_state=True)
    with pytest.raises(ContractViolation, match="train.tsv") as info:
        state.result()
    assert "expect_column_values_to_be_in_set" in str(info.value)
    assert not (tmp_path / "shards").exists()
    table = flow_artifact(state.state_details.flow_run_id, "mrpc-validation")
    failed = [row for row in table if row["success"] != "pass"]
    assert [(r["file"], r["column"], r["unexpected_count"]) for r in failed] == [
        ("train.tsv", "Quality", 1)]
    assert len(table) > 20  # every expectation of the three files, passed ones too
