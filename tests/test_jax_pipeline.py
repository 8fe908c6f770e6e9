"""`KERAS_BACKEND=jax bertflow run` on a machine without TensorFlow (as the GPU hosts are): it
downloads, validates, tokenizes, trains, evaluates and registers; the model it registered
predicts the same on either backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import run_bertflow, write_msr_files, write_release_zip

ROOT = Path(__file__).parents[1]
# A `tensorflow` package that cannot be imported, first on the path: what a host without it sees.
NO_TENSORFLOW = "raise ImportError('no TensorFlow on this machine (test)')\n"
LOGITS = textwrap.dedent("""
    import json, sys
    import keras, numpy as np
    import bert_core.model  # registers the classes a saved model names
    model = keras.saving.load_model(sys.argv[1], compile=False)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 40, (3, 16)).astype("int32")
    batch = {"input_ids": ids, "input_mask": np.ones_like(ids), "segment_ids": np.zeros_like(ids)}
    print(json.dumps({"backend": keras.backend.backend(),
                      "logits": np.asarray(model.predict_on_batch(batch)).tolist()}))
""")


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    pytest.importorskip("jax")
    root = tmp_path_factory.mktemp("jax-run")
    blocked = root / "no-tensorflow" / "tensorflow"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text(NO_TENSORFLOW)
    config = root / "tiny.yaml"
    config.write_text("data:\n  shard_size: 8\n"
                      "  row_bounds: {train: [1, 100], dev: [1, 100], test: [1, 100]}\n"
                      "train: {eval_every_steps: 4}\n")
    env = {"KERAS_BACKEND": "jax",
           "PYTHONPATH": os.pathsep.join([str(blocked.parent), str(ROOT)])}
    result = run_bertflow(["run", "--mrpc-source", str(write_msr_files(root / "msr", 32, 3)),
                           "--checkpoint", str(write_release_zip(root / "tiny.zip")),
                           "--config", str(config), "--max-seq-length", "32", "--epochs", "2",
                           "--batch-size", "4", "--json"], root / "home", env=env, timeout_s=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), root / "home", env


@pytest.mark.slow
def test_the_whole_pipeline_runs_on_jax_without_tensorflow(jax_run):
    summary, home, env = jax_run
    assert summary["state"] == "Completed"
    assert {name: t["state"] for name, t in summary["tasks"].items()} == {
        name: "Completed" for name in summary["tasks"]}
    assert summary["model"]["version"] == "1" and "challenger" in summary["model"]["aliases"]
    history = json.loads(next((home / "models").glob("*/history.json")).read_text())
    last = history["steps"][-1]  # 2 epochs of the train pairs in batches of 4
    assert last >= 8 and history["steps"] == list(range(1, last + 1))
    assert [e["step"] for e in history["evaluations"]] == sorted({*range(4, last + 1, 4), last})
    answered = run_bertflow(["predict", "--model-uri", "models:/bertflow-mrpc/1"], home,
                            stdin="a b\tc d\n", env=env)
    assert answered.returncode == 0, answered.stderr[-3000:]
    label, probability = answered.stdout.split()
    assert label in ("0", "1") and 0 <= float(probability) <= 1


@pytest.mark.slow
def test_the_model_trained_on_jax_predicts_the_same_on_tensorflow(jax_run):
    _, home, env = jax_run
    model = next((home / "models").glob("*/model.keras"))
    outputs = {}
    for backend in ("jax", "tensorflow"):
        child = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run([sys.executable, "-c", LOGITS, str(model)], env=child, cwd=ROOT,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
        assert out["backend"] == backend
        outputs[backend] = np.array(out["logits"])
    np.testing.assert_allclose(outputs["tensorflow"], outputs["jax"], rtol=0, atol=1e-5)
