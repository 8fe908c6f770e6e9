"""Where data and checkpoints may come from: GLUE folders, mirrors (with pins), releases."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import pytest

from tasks.config import DataConfig
from tasks.download import download_data, mrpc_sources
from tasks.fetch import FetchError
from tests.fixtures import write_msr_files, write_release_zip


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_release_zip(tmp_path_factory.mktemp("r") / "tiny.zip", inside="tiny_L1/")


def test_a_folder_of_glue_tsvs_is_taken_as_is(tmp_path, release):
    msr = write_msr_files(tmp_path / "msr")
    first = download_data(DataConfig(source=str(msr), checkpoint=str(release)),
                          tmp_path / "home1")
    glue = Path(first.data_dir)
    assert mrpc_sources(DataConfig(source=str(glue)))[0] == "glue"
    second = download_data(DataConfig(source=glue.as_uri(), checkpoint=str(release)),
                           tmp_path / "home2")
    for split in ("train", "dev", "test"):
        assert filecmp.cmp(first.file(f"{split}.tsv"), second.file(f"{split}.tsv"), shallow=False)
    assert second.sha256 == first.sha256


def test_release_in_a_folder_inside_the_zip(tmp_path, release):
    raw = download_data(DataConfig(source=str(write_msr_files(tmp_path / "msr")),
                                   checkpoint=release.as_uri()), tmp_path / "home")
    assert Path(raw.checkpoint_dir).name == "tiny_L1"
    assert (Path(raw.checkpoint_dir) / "bert_config.json").is_file()
    assert Path(raw.vocab_file).read_text().startswith("[PAD]\n")


def test_mirror_files_must_match_the_public_pins(tmp_path, release):
    mirror = write_msr_files(tmp_path / "mirror")  # right names, wrong content
    with pytest.raises(FetchError, match="msr_paraphrase_train.txt: size mismatch: expected "
                                         "1047044 bytes"):
        download_data(DataConfig(mirror=str(mirror), checkpoint=str(release)), tmp_path / "home")
    assert not list((tmp_path / "home" / "cache").glob("blobs/*"))


@pytest.mark.shared
def test_mirror_folder_with_the_real_files(shared, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(shared / "data" / "mrpc", mirror)
    shutil.copy(shared / "checkpoints" / "minilm-l3-h384-uncased.zip",
                mirror / "uncased_L-2_H-128_A-2.zip")  # stands in for BERT-Tiny under its name
    raw = download_data(DataConfig(mirror=str(mirror)), tmp_path / "home")
    assert raw.sha256["dev.tsv"].startswith("9e8f2847")
    assert raw.sha256["checkpoint"].startswith("f3696b5d")


def _zip(folder: Path, path: Path, inside: str) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(folder.rglob("*")):
            zf.write(file, inside + str(file.relative_to(folder)))
    return path


def test_a_task_release_zip_over_http_is_unpacked(tmp_path, release, loopback):
    from data_contracts.specs import TaskConfig
    from tests.task_files import write_task_files

    zipped = _zip(write_task_files("rte", tmp_path / "rte"), tmp_path / "RTE.zip", "RTE/")
    url = loopback.add("/drops/RTE.zip", zipped.read_bytes())
    raw = download_data(DataConfig(source=url, checkpoint=str(release)), tmp_path / "home",
                        task=TaskConfig(name="rte"))
    assert sorted(raw.sha256) == ["checkpoint", "dev.tsv", "test.tsv", "train.tsv"]
    assert raw.file("dev.tsv").read_bytes() == (tmp_path / "rte" / "dev.tsv").read_bytes()


def test_a_mirror_of_a_glue_zip_is_held_to_the_public_pins(tmp_path, release):
    from data_contracts.specs import TaskConfig
    from tests.task_files import write_task_files

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _zip(write_task_files("cola", tmp_path / "cola"), mirror / "CoLA.zip", "CoLA/")
    with pytest.raises(FetchError, match=r"CoLA.zip: train.tsv: sha256 mismatch: expected "
                                         r"cb368ebe"):
        download_data(DataConfig(mirror=str(mirror), checkpoint=str(release)), tmp_path / "home",
                      task=TaskConfig(name="cola"))
    assert not (tmp_path / "home" / "data" / "cola").exists() or not any(
        (tmp_path / "home" / "data" / "cola").iterdir())


@pytest.mark.shared
def test_a_mirror_of_the_real_glue_zip_passes_its_pins(shared, tmp_path, release):
    from data_contracts.specs import TaskConfig

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _zip(shared / "data" / "glue" / "STS-B", mirror / "STS-B.zip", "STS-B/")
    raw = download_data(DataConfig(mirror=str(mirror), checkpoint=str(release)), tmp_path / "home",
                        task=TaskConfig(name="stsb"))
    assert raw.sha256["train.tsv"].startswith("41c4d978")


def test_a_pinned_evaluation_set_replaces_the_sources_dev_file(tmp_path, release):
    from data_contracts.specs import TaskConfig
    from tasks.download import source_fingerprint
    from tasks.fingerprint import sha256_file
    from tests.task_files import write_task_files

    rte = TaskConfig(name="rte")
    source = write_task_files("rte", tmp_path / "drop", seed=1)
    pinned = tmp_path / "exam"
    pinned.mkdir()
    shutil.copy(write_task_files("rte", tmp_path / "other", seed=2) / "dev.tsv", pinned)
    cfg = DataConfig(source=str(source), checkpoint=str(release))
    raw = download_data(cfg, tmp_path / "home", task=rte, eval_set=str(pinned))
    assert raw.file("dev.tsv").read_bytes() == (pinned / "dev.tsv").read_bytes()
    for name in ("train.tsv", "test.tsv"):
        assert raw.file(name).read_bytes() == (source / name).read_bytes()
    assert raw.sha256["dev.tsv"] == sha256_file(pinned / "dev.tsv") != sha256_file(
        source / "dev.tsv")
    assert raw.sha256["train.tsv"] == sha256_file(source / "train.tsv")

    plain = download_data(cfg, tmp_path / "home", task=rte)
    assert plain.file("dev.tsv").read_bytes() == (source / "dev.tsv").read_bytes()
    assert plain.data_dir != raw.data_dir

    before = source_fingerprint(cfg, rte, str(pinned))
    assert before != source_fingerprint(cfg, rte)
    lines = (pinned / "dev.tsv").read_text().splitlines(keepends=True)
    (pinned / "dev.tsv").write_text("".join(lines[:-1]))  # the exam loses its last example
    assert source_fingerprint(cfg, rte, str(pinned)) != before  # the download's cache key
    again = download_data(cfg, tmp_path / "home", task=rte, eval_set=str(pinned))
    assert again.data_dir != raw.data_dir
    assert again.file("dev.tsv").read_bytes() == (pinned / "dev.tsv").read_bytes()
    assert again.sha256["dev.tsv"] != raw.sha256["dev.tsv"]
    assert again.sha256["train.tsv"] == raw.sha256["train.tsv"]
    assert raw.file("dev.tsv").read_text().splitlines(keepends=True) == lines  # kept as it was


def test_an_evaluation_set_over_http_and_for_other_layouts(tmp_path, release, loopback):
    from data_contracts.specs import TaskConfig
    from tasks.download import eval_set_sources, on_eval_set
    from tests.task_files import write_task_files

    source = write_task_files("sst2", tmp_path / "drop", seed=1)
    exam = write_task_files("sst2", tmp_path / "exam", seed=2) / "dev.tsv"
    loopback.add("/exam/dev.tsv", exam.read_bytes())
    raw = download_data(DataConfig(source=str(source), checkpoint=str(release)),
                        tmp_path / "home", task=TaskConfig(name="sst2"),
                        eval_set=loopback.url + "/exam/")
    assert raw.file("dev.tsv").read_bytes() == exam.read_bytes()
    assert loopback.requests == ["/exam/dev.tsv"]
    mnli = [(s.name, s.location) for s in eval_set_sources(TaskConfig(name="mnli"), "/exam")]
    assert mnli == [("dev_matched.tsv", "/exam/dev_matched.tsv"),
                    ("dev_mismatched.tsv", "/exam/dev_mismatched.tsv")]
    custom = TaskConfig(name="custom", train="train.csv")
    assert eval_set_sources(custom, "/exam/dev.csv") == []
    assert on_eval_set(custom, "/exam/dev.csv").dev == "/exam/dev.csv"
    assert on_eval_set(TaskConfig(name="rte"), "/exam") == TaskConfig(name="rte")
