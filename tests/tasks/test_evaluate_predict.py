"""The evaluate stage's predictions: the same at any batch size and with dynamic padding as
padded to max_seq_length, in manifest order, with progress on large splits, and from a model file
in a process that never trained."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from tasks.config import EvalConfig
from tasks.evaluate import evaluate_model, predict_split
from tests.tasks.eval_fixtures import write_cola


@pytest.fixture(scope="module")
def cola(tmp_path_factory):
    return write_cola(tmp_path_factory.mktemp("cola"))


def test_predictions_do_not_depend_on_batch_size(cola, tmp_path):
    trained, shards = cola
    a = evaluate_model(trained, shards, EvalConfig(batch_size=3), tmp_path / "a")
    b = evaluate_model(trained, shards, EvalConfig(batch_size=64), tmp_path / "b")
    assert a.confusion_matrix == b.confusion_matrix
    assert a.metrics["loss"] == pytest.approx(b.metrics["loss"], rel=1e-5)


EVALUATE_ALONE = """
import sys
from pathlib import Path
from tasks.config import EvalConfig
from tasks.evaluate import evaluate_model
from tasks.records import Shards, TrainedModel
trained = TrainedModel.model_validate_json(sys.argv[1])
shards = Shards.model_validate_json(sys.argv[2])
report = evaluate_model(trained, shards, EvalConfig(batch_size=4), Path(sys.argv[3]))
print(int(report.metrics["examples"]), "bert_core.optimizer" in sys.modules)
"""


def test_a_trained_model_evaluates_in_a_process_that_never_trained(cola, tmp_path):
    """As in a rerun whose train task is cached (or a second run that found the first one's
    model): the file carries the compiled AdamWeightDecay, and nothing in the process has
    imported the module that registers it."""
    import keras

    from bert_core.optimizer import create_optimizer

    trained, shards = cola
    model = keras.saving.load_model(trained.keras_file)
    model.compile(optimizer=create_optimizer(2e-5, 10, 1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model_dir = tmp_path / "model"
    shutil.copytree(trained.model_dir, model_dir)
    model.save(model_dir / "model.keras")
    compiled = trained.model_copy(update={"model_dir": str(model_dir)})

    done = subprocess.run([sys.executable, "-c", EVALUATE_ALONE, compiled.model_dump_json(),
                           shards.model_dump_json(), str(tmp_path / "report")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [str(shards.rows["dev"]), "False"]


def test_dynamic_padding_predicts_what_padding_to_max_length_predicts(cola):
    """Each length-sorted batch cut to its own longest pair gives the probabilities of the plain
    padded-to-32 prediction, row for row in manifest order; and it really cut the batches."""
    import keras

    from bert_core.inputs import read_split
    from bert_core.model import softmax
    from bert_core.predict import length_batches, predict_padded

    trained, shards = cola
    model = keras.saving.load_model(trained.keras_file, compile=False)
    for split in ("dev", "test"):
        data = read_split(shards.shard_dir, split)
        features, labels, guids = data.features, data.labels, data.guids
        probs, same_labels, same_guids = predict_split(model, shards, split, batch_size=4)
        padded = softmax(predict_padded(model, features, batch_size=4))
        np.testing.assert_allclose(probs, padded, rtol=0, atol=1e-5)
        assert same_guids == guids and (same_labels is None) == (labels is None)
        widths = [w for _, w in length_batches(features.input_mask.sum(axis=1), 4, 32)]
        assert features.input_ids.shape[1] == 32 and min(widths) < 32, widths


def test_a_large_split_logs_its_progress(cola):
    """13 dev pairs in batches of 1: more than 10 batches, so a line after 10 and at the end."""
    import keras

    trained, shards = cola
    model = keras.saving.load_model(trained.keras_file, compile=False)
    lines = []
    predict_split(model, shards, "dev", batch_size=1, log=lines.append)
    assert [line.split(",")[0] for line in lines] == ["dev 10/13 (77%)", "dev 13/13 (100%)"]
    assert all(" pairs/s, ETA " in line for line in lines), lines
    quiet = []
    predict_split(model, shards, "dev", batch_size=4, log=quiet.append)  # 4 batches: no lines
    assert quiet == []
