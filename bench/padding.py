"""Training examples/s of the real MRPC fine-tune's input pipeline padded three ways: every batch
128 wide (`train.padding="max_length"`, run_classifier's shapes), each batch cut to its longest
pair (`"dynamic"`, the default: the same batches), and length buckets every 2 positions
(`bucket_boundaries`, other batches). MiniLM-L3 from ../shared, lr 2e-5, batch 32, the train
stage's batches (bert_core.inputs) over shards from tasks.tokenize; each measurement in a process of its
own: 5 warm-up steps (tracing), then --steps timed.

    python bench/padding.py [--shared ../shared] [--steps 30] [--repeat 2]

Prints one JSON object as its last line; bench/results/padding.jsonl holds two runs (the machine
shared with other jobs, its load average recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WAYS = {"max_length": {"padding": "max_length"}, "dynamic": {"padding": "dynamic"},
        "bucketed": {"bounds": tuple(range(16, 112, 2))}}


def measure(way: str, shared: Path, steps: int) -> float:
    """Examples/s of `steps` training steps after 5 warm-up steps."""
    sys.path.insert(0, str(ROOT))
    from bert_core.backend import import_tensorflow

    import_tensorflow()
    import keras

    from bert_core.inputs import TrainBatches, read_split
    from bert_core.optimizer import create_optimizer
    from bert_core.trainer import keras_input
    from evaluate import minilm, real_shards  # bench/ is this script's first sys.path entry

    with tempfile.TemporaryDirectory() as home:
        raw, shards = real_shards(shared, Path(home))
        keras.utils.set_random_seed(0)
        model = minilm(raw)
        model.compile(optimizer=create_optimizer(2e-5, 343, 34),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        batches = TrainBatches(read_split(shards.shard_dir, "train"), 5 + steps, 32, 0,
                               **WAYS[way])
        data = keras_input(batches, 0)
        model.fit(data, steps_per_epoch=5, epochs=1, verbose=0)
        start = time.perf_counter()
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        return steps * 32 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # one measurement
    args = parser.parse_args()
    if args.way:
        print(json.dumps({"examples_per_second": measure(args.way, args.shared, args.steps)}))
        return
    env = {**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_CPP_MIN_LOG_LEVEL": "3"}
    speeds = {way: [] for way in WAYS}
    for _ in range(args.repeat):
        for way in WAYS:
            done = subprocess.run([sys.executable, __file__, "--way", way, "--shared",
                                   str(args.shared), "--steps", str(args.steps)],
                                  capture_output=True, text=True, env=env, check=True)
            speed = json.loads(done.stdout.strip().splitlines()[-1])["examples_per_second"]
            speeds[way].append(round(speed, 1))
    from evaluate import cpu_model

    print(json.dumps({"bench": "padding", "cpu": cpu_model(), "steps": args.steps,
                      "load_average_1min": os.getloadavg()[0], "examples_per_second": speeds}))


if __name__ == "__main__":
    main()
