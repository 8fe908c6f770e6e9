"""Shared fixtures: the real data in ../shared (skipped when absent) and tiny generated models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# Golden facts from ../shared/README.md: GLUE dev.tsv's first pair (run_classifier's dev-1).
GOLDEN_A = ("He said the foodservice pie business doesn 't fit the company 's long-term "
            "growth strategy .")
GOLDEN_B = '" The foodservice pie business does not fit our long-term growth strategy .'
GOLDEN_IDS = [int(i) for i in (
    "101 2002 2056 1996 9440 2121 7903 2063 11345 2449 2987 1005 1056 4906 1996 2194 1005 1055 "
    "2146 1011 2744 3930 5656 1012 102 1000 1996 9440 2121 7903 2063 11345 2449 2515 2025 4906 "
    "2256 2146 1011 2744 3930 5656 1012 102").split()]


def pytest_configure(config):
    # No telemetry from the tools under test, whatever the caller's environment says.
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared with the real MRPC data and MiniLM-L3 weights; tests using it skip without it."""
    if not (SHARED / "README.md").is_file():
        pytest.skip(f"{SHARED} is absent: real data and weights not available")
    return SHARED


@pytest.fixture(scope="session")
def shared_vocab(shared) -> Path:
    return shared / "checkpoints" / "minilm-l3-h384-uncased-hf" / "vocab.txt"


@pytest.fixture
def loopback():
    """A loopback HTTP server with scripted faults (tests/loopback.py), stopped after the test."""
    from tests.loopback import LoopbackServer

    server = LoopbackServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real, temporary Prefect API (SQLite) for the session; flows run against it."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def micro_config():
    """A BERT small enough to train in seconds on CPU."""
    from bert_core.config import BertConfig

    return BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=32)


@pytest.fixture(scope="session")
def tiny_sources(tmp_path_factory):
    """DataConfig over generated MSR files (32 pairs, every 3rd to dev) and a 1-layer release
    zip, with row bounds that accept them: the whole pipeline in seconds."""
    from tasks.config import DataConfig, RowBounds
    from tests.fixtures import write_msr_files, write_release_zip

    root = tmp_path_factory.mktemp("sources")
    return DataConfig(source=str(write_msr_files(root / "msr", train_rows=32, dev_every=3)),
                      checkpoint=str(write_release_zip(root / "tiny.zip")), shard_size=8,
                      row_bounds=RowBounds(train=(1, 100), dev=(1, 100), test=(1, 100)))
