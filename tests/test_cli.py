"""The `bertflow` command as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.conftest import GOLDEN_A, GOLDEN_B, GOLDEN_IDS
from tests.fixtures import run_bertflow, write_msr_files

runner = CliRunner()


def test_console_script_prints_help():
    exe = Path(sys.executable).with_name("bertflow")
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "checkpoint" in result.stdout and "encode" in result.stdout


def test_the_flows_load_without_a_deep_learning_framework():
    """A rerun whose tasks are all cached runs no model, so it must not wait for TensorFlow's
    import (~5 s of the warm rerun's target of 20 s): the task modules import Keras where a
    model is built or loaded."""
    script = ("import sys, flows.finetune, flows.sweep, flows.summary; print(sorted(m for m in "
              "('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]"]


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


def test_validate_accepts_a_good_drop_and_names_the_broken_rule(tmp_path):
    msr = write_msr_files(tmp_path / "msr")
    config = tmp_path / "bounds.yaml"
    config.write_text("data:\n  row_bounds: {train: [1, 100], dev: [1, 100], test: [1, 100]}\n")
    good = run_bertflow(["validate", "--mrpc-source", str(msr), "--config", str(config)],
                        tmp_path / "home")
    assert good.returncode == 0, good.stderr[-3000:]
    assert good.stdout.startswith("valid: ")
    assert not (tmp_path / "home" / "checkpoints").exists()  # a data check fetches no model

    train = msr / "msr_paraphrase_train.txt"
    lines = train.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[3] = "2" + lines[3][1:]  # a label outside {0, 1} on the file's 4th line
    train.write_text("".join(lines), encoding="utf-8")
    bad = run_bertflow(["validate", "--mrpc-source", str(msr), "--config", str(config)],
                       tmp_path / "home")
    assert bad.returncode == 1
    message = bad.stderr[bad.stderr.index("\ninvalid: "):]  # after Prefect's own log lines
    assert "train.tsv" in message and "expect_column_values_to_be_in_set" in message
    assert "Quality" in message and "1 " in message


def test_prefect_yaml_deploys_the_flows_weekly_and_on_demand():
    """Each deployment's entrypoint is a flow that accepts its parameters (what `prefect deploy`
    and the worker will resolve)."""
    import importlib

    import yaml
    from prefect import Flow

    spec = yaml.safe_load((Path(__file__).parents[1] / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert set(deployments) == {"weekly-mrpc", "cola", "sst2", "rte", "stsb", "mnli", "sweep",
                                "score"}
    assert [s["cron"] for s in deployments["weekly-mrpc"]["schedules"]] == ["0 3 * * 1"]
    assert not any(d.get("schedules") for name, d in deployments.items() if name != "weekly-mrpc")
    for deployment in deployments.values():
        assert deployment["work_pool"]["name"] == spec["deployments"][0]["work_pool"]["name"]
        path, name = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        assert isinstance(flow, Flow)
        flow.validate_parameters(deployment.get("parameters", {}))


def test_bad_settings_are_refused_naming_each_field(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", os.environ.get("PREFECT_HOME", str(tmp_path)))  # restored
    config = tmp_path / "cfg.yaml"
    config.write_text("train:\n  batch_size: 0\n")
    result = runner.invoke(app, ["run", "--home", str(tmp_path / "home"), "--config", str(config),
                                 "--learning-rate", "-1"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "train.batch_size" in text and "train.learning_rate" in text and "cfg.yaml" in text
