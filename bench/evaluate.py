"""Evaluate's prediction of the real MRPC dev + test (408 + 1,725 pairs) with the real MiniLM-L3,
padded to 128 (every batch, as Keras' model.predict over a shard did) against dynamic padding
(bert_core/predict.py: length-sorted batches, each cut to its longest pair rounded up to 8), timed
side by side in one process on this CPU.

    model      MiniLM-L3 from ../shared (Google layout), a random classifier head: prediction
               time does not depend on the head's values
    shards     the project's tokenize code (tasks.tokenize.tokenize_splits) into a temp home
    each way   its own model instance, so neither reuses the other's traced predict function;
               the first pass includes tracing, as the evaluate task pays it; --repeat passes
    check      the largest difference of the class probabilities between the two ways
    whole      evaluate_model as the evaluate task calls it (model.keras load, dev + test
               prediction, metrics, plots, report files), Keras already imported

Prints one JSON object as its last line; bench/results/evaluate.jsonl holds four runs on the
shared 2-core machine (others' jobs running beside them: the 1-minute load average at the start
of each is recorded with it).

    python bench/evaluate.py [--shared ../shared] [--batch 64] [--repeat 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The environment `bertflow run` gives TensorFlow (flows/cli.py TENSORFLOW_ENV).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def real_shards(shared: Path, home: Path):
    """Raw data and shards of the real MRPC with MiniLM-L3's vocab, as the pipeline makes them."""
    from tasks.config import DataConfig, ModelConfig
    from tasks.download import download_data
    from tasks.tokenize import tokenize_splits

    data = DataConfig(source=str(shared / "data" / "mrpc"),
                      checkpoint=str(shared / "checkpoints" / "minilm-l3-h384-uncased.zip"))
    raw = download_data(data, home)
    return raw, tokenize_splits(raw, data, ModelConfig(), home)


def minilm(raw):
    """The classifier the train stage builds from the checkpoint (head random)."""
    from bert_core.checkpoint import load_pretrained, read_checkpoint
    from bert_core.model import BertClassifier

    checkpoint = read_checkpoint(raw.checkpoint_dir)
    model = BertClassifier.from_bert_config(checkpoint.config, num_labels=2)
    load_pretrained(model, checkpoint)
    return model


def padded_way(model, shards, split: str, batch: int):
    """The former predict_split: model.predict shard by shard, every batch 128 wide."""
    import numpy as np

    from bert_core.inputs import read_shard
    from bert_core.model import softmax
    from bert_core.predict import predict_padded

    entry = json.loads(shards.manifest.read_text())["splits"][split]
    parts = [read_shard(Path(shards.shard_dir) / s["parquet"])[0]
             for s in entry["shards"]]
    return np.concatenate([softmax(predict_padded(model, f, batch)) for f in parts])


def whole_evaluate(model, shards, home: Path, batch: int) -> float:
    """Seconds of tasks.evaluate.evaluate_model on `model` saved as the train stage saves it."""
    from tasks.config import EvalConfig
    from tasks.evaluate import evaluate_model
    from tasks.records import TrainedModel

    folder = home / "model"
    folder.mkdir()
    model.save(folder / "model.keras")
    (folder / "history.json").write_text(json.dumps({
        "steps": [1], "loss": [0.7], "learning_rate": [0.0], "epochs": [{"step": 1, "loss": 0.7}],
        "resumed_from_step": None, "examples_per_second": 1.0}))
    digest = hashlib.sha256((folder / "model.keras").read_bytes()).hexdigest()
    trained = TrainedModel(model_dir=str(folder), model_sha256=digest,
                           steps=1, seconds=1.0, init="checkpoint", max_seq_length=128,
                           do_lower_case=True, labels=("0", "1"))
    return timed(lambda: evaluate_model(trained, shards, EvalConfig(batch_size=batch),
                                        home / "report"))[1]


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, round(time.perf_counter() - start, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--batch", type=int, default=64)  # EvalConfig's default
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from bert_core.backend import import_tensorflow

    import_tensorflow()
    import keras
    import numpy as np

    from tasks.evaluate import predict_split

    with tempfile.TemporaryDirectory() as home:
        raw, shards = real_shards(args.shared, Path(home))
        keras.utils.set_random_seed(0)
        models = {"padded": minilm(raw), "dynamic": minilm(raw)}
        models["dynamic"].set_weights(models["padded"].get_weights())
        ways = {"padded": lambda m, s: padded_way(m, shards, s, args.batch),
                "dynamic": lambda m, s: predict_split(m, shards, s, args.batch, print)[0]}
        seconds, probs = {way: [] for way in ways}, {}
        for _ in range(args.repeat):
            for way, predict in ways.items():
                out, took = timed(lambda: [predict(models[way], s) for s in ("dev", "test")])
                seconds[way].append(took)
                probs[way] = np.concatenate(out)
        whole_s = whole_evaluate(models["dynamic"], shards, Path(home), args.batch)
    diff = float(np.abs(probs["padded"] - probs["dynamic"]).max())
    result = {"bench": "evaluate", "cpu": cpu_model(), "cores": os.cpu_count(),
              "pairs": len(probs["padded"]), "batch": args.batch,
              "padded_s": seconds["padded"], "dynamic_s": seconds["dynamic"],
              "speedup_first_pass": round(seconds["padded"][0] / seconds["dynamic"][0], 2),
              "max_abs_prob_diff": diff, "evaluate_model_s": whole_s}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
