"""The model, optimizer and training tests again on Keras' JAX backend (what GPU machines run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.slow
def test_bert_core_runs_on_jax():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    tests = [str(HERE / f"test_{name}.py") for name in ("model", "optimizer", "training", "trainer",
                                                         "inputs")]
    check = "import keras; assert keras.backend.backend() == 'jax'"
    subprocess.run([sys.executable, "-c", check], env=env, check=True, timeout=120)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                            env=env, capture_output=True, text=True, timeout=600,
                            cwd=HERE.parents[1])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.match(r"\d+ passed", summary) and "failed" not in summary, summary
