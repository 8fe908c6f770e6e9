"""The train stage with real TensorFlow on generated shards: run_classifier's step count, a seed
that reproduces, a finished model reused, a run killed mid-training that resumes, and the head
the shards' task asks for (one logit per class, or one score for a regression)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
import pytest

from bert_core.callbacks import SpacedBackup
from bert_core.optimizer import train_steps
from tasks.config import DataConfig, ModelConfig, RowBounds, TrainConfig
from tasks.download import download_data
from tasks.fingerprint import SEAL, sha256_file
from tasks.records import Shards
from tasks.shards import ShardJob, plan_shards, write_shard
from tasks.tokenize import tokenize_splits
from tasks.train import train_key, train_model
from tests.fixtures import WORDS, write_msr_files, write_release_zip

MODEL = ModelConfig(max_seq_length=32)
TRAIN = TrainConfig(epochs=2, batch_size=4, learning_rate=1e-3, save_every_steps=3,
                    save_min_seconds=0)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Raw data and shards of 30 generated train pairs and a 1-layer release (hidden 16)."""
    root = tmp_path_factory.mktemp("train")
    data = DataConfig(source=str(write_msr_files(root / "msr", train_rows=40, dev_every=4)),
                      checkpoint=str(write_release_zip(root / "tiny.zip")), shard_size=8,
                      row_bounds=RowBounds(train=(1, 100), dev=(1, 100), test=(1, 100)))
    raw = download_data(data, root / "home")
    return raw, tokenize_splits(raw, data, MODEL, root / "home")


def _weights(trained) -> list[np.ndarray]:
    return keras.saving.load_model(trained.keras_file).get_weights()


def test_trains_run_classifiers_step_count_and_saves_everything(inputs, tmp_path):
    raw, shards = inputs
    trained = train_model(raw, shards, MODEL, TRAIN, tmp_path)

    assert shards.rows["train"] == 30
    assert trained.steps == train_steps(30, 4, 2)[0] == 15
    assert trained.init == "checkpoint"
    labels = json.loads(shards.manifest.read_text())["labels"]
    assert trained.labels == tuple(labels) and len(labels) == 2 and trained.task == "mrpc"
    assert keras.saving.load_model(trained.keras_file).output_shape[-1] == 2
    folder = Path(trained.model_dir)
    assert folder.parent == tmp_path / "models"
    assert {p.name for p in folder.iterdir()} == {
        "model.keras", "history.json", "vocab.txt", "bert_config.json", "train_config.json",
        "record.json", SEAL}
    history = json.loads(trained.history_file.read_text())
    assert history["steps"] == list(range(1, 16))
    assert history["resumed_from_step"] is None
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    # run_classifier's schedule: the first update at lr 0 (warmup over int(0.1 * 15) = 1 step),
    # then linear decay from step 0's peak: the update of step s uses 1e-3 * (1 - (s - 1) / 15)
    expected = [0.0] + [1e-3 * (1 - (s - 1) / 15) for s in range(2, 16)]
    assert history["learning_rate"] == pytest.approx(expected, rel=1e-5)
    assert [p.name for p in (tmp_path / "training").iterdir()] == [f"{folder.name}.lock"]


def test_same_seed_same_model_and_a_finished_model_is_reused(inputs, tmp_path):
    raw, shards = inputs
    first = train_model(raw, shards, MODEL, TRAIN, tmp_path / "a")
    second = train_model(raw, shards, MODEL, TRAIN, tmp_path / "b")
    for a, b in zip(_weights(first), _weights(second)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert json.loads(first.history_file.read_text())["loss"] == pytest.approx(
        json.loads(second.history_file.read_text())["loss"], abs=1e-6)

    stamp = first.keras_file.stat().st_mtime_ns
    again = train_model(raw, shards, MODEL, TRAIN, tmp_path / "a")
    assert again == first and first.keras_file.stat().st_mtime_ns == stamp  # nothing retrained

    other = train_model(raw, shards, MODEL, TRAIN.model_copy(update={"seed": 7}), tmp_path / "a")
    assert other.model_dir != first.model_dir
    assert not all(np.allclose(a, b) for a, b in zip(_weights(first), _weights(other)))


def test_from_scratch_ignores_the_checkpoint_weights(inputs, tmp_path):
    raw, shards = inputs
    cfg = TRAIN.model_copy(update={"init_from_checkpoint": False, "epochs": 0.3})
    trained = train_model(raw, shards, MODEL, cfg, tmp_path)
    assert trained.init == "scratch" and trained.steps == 2


def test_the_bert_tiny_architecture_replaces_the_checkpoints_config(inputs, tmp_path):
    raw, shards = inputs
    cfg = TRAIN.model_copy(update={"init_from_checkpoint": False, "architecture": "bert-tiny",
                                   "epochs": 0.3})
    trained = train_model(raw, shards, MODEL, cfg, tmp_path)
    config = json.loads((Path(trained.model_dir) / "bert_config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (128, 2)  # the release: 16, 1


KILLED_RUN = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from tasks.config import ModelConfig, TrainConfig
    from tasks.download import RawData
    from tasks.tokenize import Shards
    from tasks.train import train_model
    raw = RawData.model_validate_json(Path(sys.argv[1]).read_text())
    shards = Shards.model_validate_json(Path(sys.argv[2]).read_text())
    train_model(raw, shards, ModelConfig.model_validate_json(sys.argv[3]),
                TrainConfig.model_validate_json(sys.argv[4]), Path(sys.argv[5]))
""")


def test_a_killed_run_resumes_from_its_last_backup(inputs, tmp_path):
    """SIGKILL a training process once it has a backup, start again: the second run picks up
    from the backup and ends at the same step count as an uninterrupted run."""
    raw, shards = inputs
    cfg = TRAIN.model_copy(update={"epochs": 40, "save_every_steps": 10})  # 300 steps
    (tmp_path / "raw.json").write_text(raw.model_dump_json())
    (tmp_path / "shards.json").write_text(shards.model_dump_json())
    home = tmp_path / "home"
    work = home / "training" / train_key(shards, raw, MODEL, cfg)
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(tmp_path / "raw.json"),
         str(tmp_path / "shards.json"), MODEL.model_dump_json(), cfg.model_dump_json(),
         str(home)], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        _wait_for_steps(work / "history.jsonl", 45, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    logged = [json.loads(line) for line in (work / "history.jsonl").read_text().splitlines()]
    killed_at = max(r["step"] for r in logged if "loss" in r)
    assert killed_at < 300 and (work / "backup").is_dir()
    assert not (home / "models").exists() or not any((home / "models").iterdir())

    trained = train_model(raw, shards, MODEL, cfg, home)

    history = json.loads(trained.history_file.read_text())
    assert trained.steps == 300 and history["steps"] == list(range(1, 301))
    resumed = history["resumed_from_step"]
    assert resumed is not None and 40 <= resumed <= killed_at and resumed % 10 == 0
    assert not work.exists()  # backups go once the model is saved


@pytest.mark.parametrize(("min_seconds", "backed_up"), [(0, [False, True, True, True]),
                                                       (3600, [False] * 4)])
def test_a_due_backup_waits_until_save_min_seconds_have_passed(tmp_path, min_seconds, backed_up):
    """Due every 2 steps: written at step 2 when no minimum applies, never within the hour."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    backup, seen = tmp_path / "backup", []

    class AfterEachStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(any(backup.glob("step-*.weights.h5")))

    model.fit(np.zeros((8, 2)), np.zeros((8, 1)), batch_size=2, verbose=0,
              callbacks=[SpacedBackup(str(backup), save_freq=2, min_seconds=min_seconds,
                                      delete_checkpoint=False), AfterEachStep()])
    assert seen == backed_up


def test_a_training_process_imports_tensorflow_without_jax():
    """`make install`'s dev extra installs JAX, and TensorFlow's tflite utilities import it when
    present (+106 MB of RSS): the train task's import leaves it out, and JAX still imports after."""
    pytest.importorskip("jax")
    check = ("import sys\n"
             "from bert_core.backend import import_tensorflow\n"
             "import_tensorflow()\n"
             "assert 'tensorflow' in sys.modules and 'jax' not in sys.modules, sorted(sys.modules)\n"
             "import keras, jax\n"
             "print(keras.backend.backend(), jax.numpy.ones(2).sum())\n")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          env={**os.environ, "KERAS_BACKEND": "tensorflow",
                               "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["tensorflow", "2.0"]


def _wait_for_steps(path: Path, steps: int, process: subprocess.Popen, timeout_s: float = 300):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "training process ended before it could be killed"
        if path.is_file() and path.read_text().count('"loss"') >= steps:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not reach step {steps}")


def _batches(inputs, steps: int, **options) -> list:
    """The first `steps` (features, labels) batches the train stage would train on."""
    from bert_core.inputs import TrainBatches, read_split

    _, shards = inputs
    train = read_split(shards.shard_dir, "train")
    batches = TrainBatches(train, steps, TRAIN.batch_size, TRAIN.seed, TRAIN.shuffle_buffer,
                           **options)
    return [batches.batch(step)[0] for step in range(steps)]


def test_bucketing_batches_similar_lengths_padded_to_their_bound(inputs):
    """Every pair keeps its real tokens; each batch is as wide as its bucket's bound."""
    seen = 0
    for features, labels in _batches(inputs, 12, bounds=(16, 24)):
        width = int(features["input_ids"].shape[1])
        lengths = features["input_mask"].sum(axis=1)
        assert features["input_ids"].shape == (4, width) and labels.shape == (4,)
        assert width in (16, 24, 32)
        lower = {16: 0, 24: 16, 32: 24}[width]
        assert all(lower < n <= width for n in lengths)  # each pair in its own bucket
        ids = features["input_ids"]
        assert all(ids[i, 0] == 2 and (ids[i, n:] == 0).all() for i, n in enumerate(lengths))
        seen += 1
    assert seen == 12


def test_a_bucketed_run_trains_run_classifiers_steps(inputs, tmp_path):
    raw, shards = inputs
    cfg = TRAIN.model_copy(update={"bucket_boundaries": (16, 24)})
    trained = train_model(raw, shards, MODEL, cfg, tmp_path)
    assert trained.steps == 15
    assert json.loads(trained.history_file.read_text())["steps"] == list(range(1, 16))
    # bucketed batches are not run_classifier's: dropout draws at each batch's own width, not at
    # max_seq_length (bench/results/step_cost.md: that draw was 13 of 79 s of steps)
    config = json.loads(zipfile.ZipFile(Path(trained.model_dir) / "model.keras").read("config.json"))
    text = json.dumps(config)
    assert '"dropout_length": null' in text and f'"length": {MODEL.max_seq_length}' not in text


def _small_model():
    keras.utils.set_random_seed(0)  # every copy starts from the same weights
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def test_a_backup_restores_weights_moments_and_step_and_stops_at_the_same_count(tmp_path):
    """SpacedBackup on public Keras API: a fresh model given the backup folder resumes at the
    newest backup's step with its weights and Adam moments, and StopAtStep ends it at the same
    total; an unreadable newest backup falls back to the one before."""
    from bert_core.callbacks import StopAtStep

    x, y = np.random.default_rng(0).normal(size=(16, 2)), np.ones((16, 1))
    backup = SpacedBackup(str(tmp_path / "backup"), save_freq=2, min_seconds=0,
                          delete_checkpoint=False)
    first = _small_model()
    first.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0,
              callbacks=[backup, StopAtStep(7)])
    assert int(first.optimizer.iterations.numpy()) == 7
    assert [p.name for p in backup.backups()] == ["step-000000006.weights.h5",
                                                   "step-000000004.weights.h5"]  # two kept
    assert backup.latest_step() == 6

    second, at_start = _small_model(), {}

    class Seen(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            at_start["step"] = int(self.model.optimizer.iterations.numpy())
            at_start["weights"] = self.model.get_weights()
            at_start["moments"] = [v.numpy() for v in self.model.optimizer.variables]

    second.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0,
               callbacks=[backup, StopAtStep(10), Seen()])
    assert at_start["step"] == 6 and int(second.optimizer.iterations.numpy()) == 10
    reference = _small_model()
    reference.fit(x[:12], y[:12], batch_size=2, epochs=1, shuffle=False, verbose=0)  # 6 steps
    for a, b in zip(at_start["weights"], reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert any(np.abs(m).sum() > 0 for m in at_start["moments"][1:])  # moments came back

    newest = backup.backups()[0]
    newest.write_bytes(b"not an HDF5 file")
    third = _small_model()
    third.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0,
              callbacks=[backup, StopAtStep(10), Seen()])
    assert at_start["step"] == int(backup.backups()[1].name[5:14])  # the one before


def _dynamic_and_padded(inputs, steps: int):
    """(dynamic, max_length) first `steps` batches."""
    return [_batches(inputs, steps, padding=p) for p in ("dynamic", "max_length")]


def test_dynamic_padding_cuts_run_classifiers_batches_to_their_longest_pair(inputs):
    """The same examples in the same batches and order as padded to max_seq_length: only the
    columns past each batch's longest pair are gone."""
    dynamic, padded = _dynamic_and_padded(inputs, 12)
    widths = set()
    for (cut, labels), (full, full_labels) in zip(dynamic, padded):
        width = cut["input_ids"].shape[1]
        widths.add(width)
        assert width == full["input_mask"].sum(axis=1).max() and full["input_ids"].shape[1] == 32
        np.testing.assert_array_equal(labels, full_labels)
        for name in ("input_ids", "input_mask", "segment_ids"):
            np.testing.assert_array_equal(cut[name], full[name][:, :width])
            assert not full[name][:, width:].any()
    assert len(widths) > 1 and max(widths) < 32, widths


def test_dynamic_padding_trains_the_model_padding_to_max_length_trains(inputs):
    """Six AdamW steps on the same batches, dynamic against padded to 32, dropout on as in the
    train stage: the same weights up to float rounding. The encoder's dropout masks are drawn
    as if every batch were padded to max_seq_length (the train stage's `dropout_length`), so a
    real token gets the same mask both ways. atol 1e-5: weights start ~0.02 and move by ~1e-3
    per step at lr 1e-3, and matmuls over 20 instead of 32 positions differ by float32 rounding
    (~1e-7 relative)."""
    from bert_core.config import BertConfig
    from bert_core.model import BertClassifier
    from bert_core.optimizer import create_optimizer
    from tests.fixtures import tiny_vocab

    config = BertConfig(vocab_size=len(tiny_vocab()), hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)

    def build():
        return BertClassifier.from_bert_config(config, dropout_length=MODEL.max_seq_length)

    trained = []
    for batches in _dynamic_and_padded(inputs, 6):
        keras.utils.set_random_seed(TRAIN.seed)
        model = build()
        model.compile(optimizer=create_optimizer(1e-3, 6, 1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        for features, labels in batches:
            model.train_on_batch(features, labels)
        trained.append(model.get_weights())
    moved = max(np.abs(a - b).max() for a, b in zip(trained[0], trained[1]))
    assert moved < 1e-5, moved
    keras.utils.set_random_seed(TRAIN.seed)
    start = build().get_weights()
    assert max(np.abs(a - b).max() for a, b in zip(start, trained[0])) > 1e-4  # it did train


def _texts(rng: random.Random, rows: int) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 9))) + " ." for _ in range(rows)]


def _score_shards(raw, folder: Path) -> Shards:
    """STS-B-like shards as tasks/shards.py writes them (pairs scored 0-5), with the manifest
    the tokenize stage writes for a regression task."""
    rng, common = random.Random(1), {"vocab_file": raw.vocab_file, "do_lower_case": True,
                                     "max_seq_length": MODEL.max_seq_length,
                                     "out_dir": str(folder), "regression": True}
    folder.mkdir()
    splits = {}
    for split, rows, role in (("train", 24, "train"), ("dev", 8, "eval")):
        scores = [round(rng.uniform(0, 5), 2) for _ in range(rows)]
        jobs = plan_shards(split, [f"{split}-{i}" for i in range(rows)], _texts(rng, rows),
                           _texts(rng, rows), scores, 16, **common)
        splits[split] = {"rows": rows, "labeled": True, "role": role,
                         "shards": [asdict(write_shard(job)) for job in jobs]}
    (folder / "manifest.json").write_text(json.dumps({
        "task": "stsb", "labels": [], "regression": True, "pair": True,
        "max_seq_length": MODEL.max_seq_length, "splits": splits}))
    return Shards(shard_dir=str(folder), manifest_sha256=sha256_file(folder / "manifest.json"),
                  rows={name: entry["rows"] for name, entry in splits.items()})


def test_a_regression_task_trains_a_one_unit_head_on_its_scores(inputs, tmp_path):
    """STS-B's scores stay floats in the Parquet and TFRecord shards; the model trained on them
    has one output, and its record names the task and no classes."""
    import pyarrow.parquet as pq
    import tensorflow as tf

    raw, _ = inputs
    shards = _score_shards(raw, tmp_path / "shards")
    first = json.loads(shards.manifest.read_text())["splits"]["train"]["shards"][0]
    table = pq.read_table(Path(shards.shard_dir) / first["parquet"])
    assert str(table.schema.field("label").type) == "float"
    spec = {"label_ids": tf.io.FixedLenFeature([], tf.float32)}
    read = [float(r["label_ids"]) for r in tf.data.TFRecordDataset(
        str(Path(shards.shard_dir) / first["tfrecord"])).map(
        lambda r: tf.io.parse_single_example(r, spec)).as_numpy_iterator()]
    assert read == pytest.approx(table.column("label").to_pylist())
    assert len(set(read)) > 10 and any(v != int(v) for v in read)  # scores, not class ids

    trained = train_model(raw, shards, MODEL, TRAIN.model_copy(update={"eval_every_steps": 3}),
                          tmp_path / "home")
    assert trained.labels == () and trained.regression and trained.task == "stsb"
    assert keras.saving.load_model(trained.keras_file).output_shape[-1] == 1
    history = json.loads(trained.history_file.read_text())
    assert [e["step"] for e in history["evaluations"]] == [3, 6, 9, 12]  # 24 rows, 2 epochs
    assert all(set(e) == {"step", "loss"} for e in history["evaluations"])  # the dev MSE
    with pytest.raises(ValueError, match="class_weight='balanced' needs class labels"):
        train_model(raw, shards, MODEL, TRAIN.model_copy(update={"class_weight": "balanced"}),
                    tmp_path / "home")


def test_single_sentence_shards_pack_one_segment_and_scores_need_regression(inputs, tmp_path):
    """CoLA / SST-2 rows have no second sentence: [CLS] a [SEP], all segment 0. Float labels
    on a classification job are refused (pyarrow would truncate 3.8 to 3 in an int32 column)."""
    from bert_core.inputs import read_shard
    from bert_core.tokenization import FullTokenizer

    raw, _ = inputs
    common = {"vocab_file": raw.vocab_file, "do_lower_case": True,
              "max_seq_length": MODEL.max_seq_length, "out_dir": str(tmp_path)}
    texts = _texts(random.Random(2), 5)
    jobs = plan_shards("train", [f"train-{i}" for i in range(5)], texts, None,
                       [0, 1, 1, 0, 1], 3, **common)
    assert [len(job.guids) for job in jobs] == [3, 2] and all(j.texts_b is None for j in jobs)
    features, table = read_shard(tmp_path / write_shard(jobs[0]).parquet)
    sep = FullTokenizer(raw.vocab_file).convert_tokens_to_ids(["[SEP]"])[0]
    assert not features.segment_ids.any()
    assert ((features.input_ids == sep).sum(axis=1) == 1).all()  # one sentence, one [SEP]
    assert table.column("label").to_pylist() == [0, 1, 1]
    assert str(table.schema.field("label").type) == "int32"
    with pytest.raises(ValueError, match="float labels \\(scores\\) need regression=True"):
        ShardJob("train", 0, 1, ["a"], ["x"], None, [3.8], **common)
