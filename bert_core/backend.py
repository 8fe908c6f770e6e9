"""How a training process imports TensorFlow: kept apart from the tasks, so that a benchmark can
import TensorFlow the same way without Prefect."""

from __future__ import annotations

import importlib
import os
import sys


def import_tensorflow() -> None:
    """Import TensorFlow (when Keras will run on it) with JAX hidden: TensorFlow's tflite
    utilities import JAX whenever it is installed (the dev extra has it, for the JAX backend's
    tests), which costs a training process 106 MB of RSS and 0.7 s, for nothing it uses. JAX
    imports normally afterwards."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow" or \
            {"tensorflow", "jax"} & set(sys.modules):
        return
    sys.modules["jax"] = None  # `import jax` raises ImportError, which tflite's import catches
    try:
        importlib.import_module("tensorflow")
    except ImportError:
        pass  # no TensorFlow here (the GPU machines): Keras runs on another backend
    finally:
        del sys.modules["jax"]
