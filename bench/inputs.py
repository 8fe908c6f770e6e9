"""The train stage's input, two ways on TensorFlow: what run_classifier does (tf.data over the
TFRecord shards: interleave, repeat, shuffle(100), batch, each batch cut to its longest pair,
prefetch) against bertflow's (bert_core/inputs.py: the Parquet shards read with pyarrow, the
same pipeline planned in numpy, batches assembled ahead on a thread, wrapped in tf.data for
`fit`). The numpy way is the only one JAX can use; this says what it costs on TensorFlow.

    input alone    batches/s of each way over a whole 3-epoch run's batches (343), nothing else
    training       MiniLM-L3 training examples/s fed by each way (`fit`, lr 2e-5, batch 32,
                   dynamic padding): 5 warm-up steps, then --steps timed, each in a process of
                   its own

Real MRPC and MiniLM-L3 from ../shared. Writes bench/results/inputs.{json,md}; the last line
printed is one JSON object.

    python bench/inputs.py [--shared ../shared] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from accuracy import bertflow_commit  # bench/ is this script's first sys.path entry
from accuracy_report import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WAYS = ("tfrecord", "parquet")
STEPS = 343  # MRPC's 3-epoch run


def tfrecord_batches(shards, seed: int):
    """run_classifier's input_fn over our TFRecords, each batch cut to its longest pair."""
    import tensorflow as tf

    manifest = json.loads(shards.manifest.read_text())
    files = [str(Path(shards.shard_dir) / s["tfrecord"])
             for s in manifest["splits"]["train"]["shards"]]
    spec = {name: tf.io.FixedLenFeature([128], tf.int64)
            for name in ("input_ids", "input_mask", "segment_ids")}
    spec["label_ids"] = tf.io.FixedLenFeature([], tf.int64)

    def parse(record):
        example = {k: tf.cast(v, tf.int32) for k, v in tf.io.parse_single_example(record, spec).items()}
        return example, example.pop("label_ids")

    def to_longest(features, label):
        width = tf.reduce_max(tf.reduce_sum(features["input_mask"], axis=1))
        return {k: v[:, :width] for k, v in features.items()}, label

    autotune = tf.data.AUTOTUNE
    return (tf.data.Dataset.from_tensor_slices(files)
            .interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                        num_parallel_calls=autotune, deterministic=True)
            .repeat().shuffle(100, seed=seed).map(parse, num_parallel_calls=autotune)
            .batch(32, drop_remainder=True).map(to_longest, num_parallel_calls=autotune)
            .prefetch(autotune))


def parquet_batches(shards, seed: int, steps: int = STEPS):
    from bert_core.inputs import TrainBatches, read_split
    from bert_core.trainer import keras_input

    return keras_input(TrainBatches(read_split(shards.shard_dir, "train"), steps, 32, seed), 0)


def measure(way: str, shared: Path, steps: int) -> dict:
    from bert_core.backend import import_tensorflow

    import_tensorflow()
    import keras

    from bert_core.optimizer import create_optimizer
    from evaluate import minilm, real_shards  # bench/evaluate.py

    with tempfile.TemporaryDirectory() as home:
        raw, shards = real_shards(shared, Path(home))
        make = tfrecord_batches if way == "tfrecord" else parquet_batches
        start = time.perf_counter()
        count = sum(1 for _ in make(shards, 1).take(STEPS))
        input_rate = count / (time.perf_counter() - start)
        keras.utils.set_random_seed(0)
        model = minilm(raw)
        model.compile(optimizer=create_optimizer(2e-5, 343, 34),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        data = make(shards, 2) if way == "tfrecord" else parquet_batches(shards, 2, 5 + steps)
        model.fit(data, steps_per_epoch=5, epochs=1, verbose=0)
        start = time.perf_counter()
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        return {"input_batches_per_s": input_rate,
                "train_examples_per_s": steps * 32 / (time.perf_counter() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # one measurement
    opts = parser.parse_args()
    if opts.way:
        print(json.dumps(measure(opts.way, opts.shared, opts.steps)))
        return
    from flows.options import TENSORFLOW_ENV

    env = {**os.environ, **TENSORFLOW_ENV, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    results = {}
    for way in WAYS:
        done = subprocess.run([sys.executable, __file__, "--way", way, "--shared",
                               str(opts.shared), "--steps", str(opts.steps)],
                              capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            sys.exit(f"{way} failed:\n{done.stderr[-3000:]}")
        results[way] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{way}: {results[way]}", flush=True)
    here = machine()
    anchor = results["tfrecord"]
    lines = ["| input | batches/s, input alone | training examples/s | / tf.data |",
             "|---|---:|---:|---:|"]
    lines += [f"| {way} | {r['input_batches_per_s']:.0f} | {r['train_examples_per_s']:.1f} | "
              f"{r['train_examples_per_s'] / anchor['train_examples_per_s']:.3f} |"
              for way, r in results.items()]
    cpu = here["cpu"]
    lines += ["", f"CPU: {cpu['model']}, {cpu['cores']} cores, {' '.join(cpu['flags'])}; commit "
                  f"{bertflow_commit()}; {opts.steps} timed steps after 5 warm-up"]
    figures = {"results": results, "steps": opts.steps, "commit": bertflow_commit(), **here,
               "utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    print("\n".join(lines))
    (RESULTS / "inputs.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "inputs.json").write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
