"""Data parallelism on CPU: two logical devices train what one trains (TensorFlow's
MirroredStrategy, JAX's DataParallel), with the global batch split between them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[2]
# One fine-tune of the tiny model (dropout off: each device would draw its own masks; gradients
# clipped at every step), printed as its loss curve, the device count it saw and its final
# weights' sums; the model is saved and loaded back to show it is an ordinary Keras model.
SCRIPT = textwrap.dedent("""
    import json, sys, tempfile
    from pathlib import Path
    devices = int(sys.argv[1])
    import keras
    if keras.backend.backend() == "tensorflow" and devices > 1:
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    from bert_core.train_config import TrainConfig
    from bert_core.trainer import data_parallel, fine_tune, read_history
    from tests.bert_core.test_trainer import build, pairs_split
    with data_parallel() as seen:
        pass
    cfg = TrainConfig(learning_rate=1e-3, epochs=2, batch_size=16, save_min_seconds=0, seed=1)
    with tempfile.TemporaryDirectory() as work:
        # initial weights 25x the usual spread: gradients far past the clip norm of 1.0
        trained = fine_tune(build(dropout=0.0, initializer_range=0.5), pairs_split(64), cfg,
                            Path(work), lambda _: None)
        history = read_history(Path(work) / "history.jsonl", 16, trained.seconds)
        trained.model.save(Path(work) / "model.keras")
        loaded = keras.saving.load_model(Path(work) / "model.keras")
    print(json.dumps({"devices": seen, "loss": history["loss"], "steps": trained.steps,
                      "weights": [float(abs(w).sum()) for w in loaded.get_weights()]}))
""")


def _run(backend: str, devices: int) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(ROOT)}
    if backend == "jax":
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(devices)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_devices_train_what_one_trains(backend):
    pytest.importorskip(backend)
    one, two = _run(backend, 1), _run(backend, 2)
    assert one["devices"] == 1 and two["devices"] == 2
    assert one["steps"] == two["steps"] == 8  # the global batch stays 16: the same steps
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-4, atol=1e-5)
    # (sums of |w|; atol for the key biases, which softmax makes gradient-free: float noise, up
    # to 1e-5; unclipped by the whole batch's norm, a device's weights differ by 1e-3)
    np.testing.assert_allclose(two["weights"], one["weights"], rtol=1e-4, atol=1e-4)
