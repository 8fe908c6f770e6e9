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
