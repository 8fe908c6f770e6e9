"""The `bertflow` command as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.conftest import GOLDEN_A, GOLDEN_B, GOLDEN_IDS

runner = CliRunner()


def test_console_script_prints_help():
    exe = Path(sys.executable).with_name("bertflow")
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "checkpoint" in result.stdout and "encode" in result.stdout


@pytest.mark.shared
def test_encode_prints_the_golden_ids(shared_vocab):
    result = runner.invoke(app, ["encode", "--vocab", str(shared_vocab), GOLDEN_A, GOLDEN_B])
    assert result.exit_code == 0, result.output
    assert "input_ids:   " + " ".join(map(str, GOLDEN_IDS)) in result.output


@pytest.mark.shared
def test_checkpoint_report_names_fresh_weights(shared):
    zip_path = shared / "checkpoints" / "minilm-l3-h384-uncased.zip"
    result = runner.invoke(app, ["checkpoint", str(zip_path)])
    assert result.exit_code == 0, result.output
    assert "53 weights from checkpoint, 4 fresh: pooled_dense/kernel, pooled_dense/bias, " \
           "logits/kernel, logits/bias" in result.output


def test_checkpoint_error_names_the_source(tmp_path):
    result = runner.invoke(app, ["checkpoint", str(tmp_path)])
    assert result.exit_code == 2
    assert "bert_config.json" in result.output and tmp_path.name in result.output
