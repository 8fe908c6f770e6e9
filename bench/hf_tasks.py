"""Hugging Face's fine-tune of a GLUE task (CoLA, SST-2, RTE, STS-B) as one command: the anchor
that bench/tasks.py sets beside `bertflow run --task`. The recipe and loop are bench/
hf_run_glue.py's with `--padding longest` (imported, not copied): torch AdamW (decay 0.01 except
bias and LayerNorm), linear warmup then decay, gradients clipped to 1.0, run_classifier's step
count int(n / batch * epochs) in full shuffled batches, each cut to its longest example
(DataCollatorWithPadding's tensors). What differs per task is read from TASKS:

    task  files (../shared/data/glue/<folder>)  texts                  labels -> model
    cola  CoLA/{train,dev}.tsv, no header       sentence               "0" "1": 2 classes
    sst2  SST-2/{train,dev}.tsv                 sentence               "0" "1": 2 classes
    rte   RTE/{train,dev}.tsv                   sentence1, sentence2   "entailment"
                                                                       "not_entailment": 2 classes
    stsb  STS-B/{train,dev}.tsv                 sentence1, sentence2   score 0-5: 1 output, MSE
                                                                       (problem_type regression)

Class labels are train's label strings in sorted order. Dev metrics with sklearn and scipy:
accuracy and Matthews correlation (mcc) for the classifiers (plus hf_run_glue's F1 of class 1
and collapsed), Pearson, Spearman and MSE for STS-B. Test is not predicted: the bench compares
the train stage. Prints one JSON line: dev metrics, train_s (model load, loop, save, as
bench/accuracy.py defines it), steps and the seconds of each stage.

    python bench/hf_tasks.py --task cola --seed 1 [--epochs 3] [--limit N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hf_run_glue import EVAL_BATCH, RECIPE, cut, dev_metrics, finetune, train_loader

from data_contracts.reader import read_tsv
from data_contracts.specs.glue import COLA_COLUMNS

MAX_SEQ_LENGTH = 128
PADDING = "longest"  # hf_run_glue's dynamic padding
# folder under glue/, column names of a header-less file, text columns, label column, metric
TASKS = {"cola": {"folder": "CoLA", "columns": COLA_COLUMNS, "texts": ("sentence",),
                  "label": "label", "metric": "mcc"},
         "sst2": {"folder": "SST-2", "texts": ("sentence",), "label": "label",
                  "metric": "accuracy"},
         "rte": {"folder": "RTE", "texts": ("sentence1", "sentence2"), "label": "label",
                 "metric": "accuracy"},
         "stsb": {"folder": "STS-B", "texts": ("sentence1", "sentence2"), "label": "score",
                  "metric": "pearson", "regression": True}}


def label_ids(values: list[str], names: list[str] | None) -> np.ndarray:
    """Class ids of label strings, by their place in `names`; None (regression): the floats.

    >>> label_ids(["not_entailment", "entailment"], ["entailment", "not_entailment"])
    array([1, 0])
    >>> label_ids(["3.8", "0"], None)
    array([3.8, 0. ], dtype=float32)
    """
    if names is None:
        return np.asarray(values, dtype=np.float32)
    index = {name: i for i, name in enumerate(names)}
    return np.asarray([index[v] for v in values])


def encode(tokenizer, task: dict, path: Path, names: list[str] | None,
           limit: int | None = None) -> torch.utils.data.TensorDataset:
    """(ids, mask, segments, labels) of one labelled split: one text or a pair per example,
    padded to 128 (each batch is cut to its longest later, as in hf_run_glue)."""
    frame = read_tsv(path, task.get("columns"))[:limit]
    texts = [list(frame[column]) for column in task["texts"]]
    enc = tokenizer(*texts, truncation=True, max_length=MAX_SEQ_LENGTH, padding="max_length",
                    return_tensors="pt")
    labels = torch.from_numpy(label_ids(list(frame[task["label"]]), names))
    return torch.utils.data.TensorDataset(enc["input_ids"], enc["attention_mask"],
                                          enc["token_type_ids"], labels)


@torch.no_grad()
def logits(model, dataset) -> np.ndarray:
    """The model's outputs (n, num_labels) in the dataset's order, in batches of 64."""
    model.eval()
    out = []
    for start in range(0, len(dataset), EVAL_BATCH):
        ids, mask, segments, _ = cut([t[start:start + EVAL_BATCH] for t in dataset.tensors],
                                     PADDING)
        out.append(model(input_ids=ids, attention_mask=mask, token_type_ids=segments).logits)
    return torch.cat(out).numpy()


def metrics(labels: np.ndarray, outputs: np.ndarray, regression: bool) -> dict:
    """STS-B: Pearson, Spearman, MSE (collapsed: the same score for every pair). Classifiers:
    hf_run_glue's accuracy, F1 (of class 1) and collapsed, plus the Matthews correlation.

    >>> metrics(np.array([0, 1, 1, 0]), np.array([[2., 1], [0, 3], [1, 2], [1, 2]]), False)["mcc"]
    0.5773502691896258
    """
    if regression:
        from scipy.stats import pearsonr, spearmanr

        scores = outputs[:, 0]
        constant = bool(np.ptp(scores) < 1e-6)
        return {"pearson": float("nan") if constant else float(pearsonr(scores, labels)[0]),
                "spearman": float("nan") if constant else float(spearmanr(scores, labels)[0]),
                "mse": float(np.mean((scores - labels) ** 2)), "collapsed": constant}
    from sklearn.metrics import matthews_corrcoef

    probs = torch.softmax(torch.from_numpy(outputs), -1).numpy()
    return {**dev_metrics(labels, probs),
            "mcc": float(matthews_corrcoef(labels, outputs.argmax(-1)))}


def run(name: str, shared: Path, seed: int, setting: dict, out: Path,
        limit: int | None = None) -> dict:
    """Load + tokenize, train (model load, loop, save), evaluate dev; each stage timed."""
    from transformers import AutoTokenizer, BertForSequenceClassification, set_seed

    task, hf_dir = TASKS[name], shared / "checkpoints" / "minilm-l3-h384-uncased-hf"
    folder = shared / "data" / "glue" / task["folder"]
    regression = task.get("regression", False)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    set_seed(seed)
    clock = time.perf_counter()
    names = None if regression else sorted(
        set(read_tsv(folder / "train.tsv", task.get("columns"))[task["label"]][:limit]))
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    train_set, dev_set = (encode(tokenizer, task, folder / f"{split}.tsv", names, limit)
                          for split in ("train", "dev"))
    seconds, clock = {"tokenize": time.perf_counter() - clock}, time.perf_counter()
    model = BertForSequenceClassification.from_pretrained(
        hf_dir, num_labels=1 if regression else len(names),
        problem_type="regression" if regression else "single_label_classification")
    steps = finetune(model, train_loader(train_set, PADDING, setting["batch_size"], seed),
                     setting, PADDING)
    model.save_pretrained(out / "model")
    seconds["train"], clock = time.perf_counter() - clock, time.perf_counter()
    dev = metrics(dev_set.tensors[3].numpy(), logits(model, dev_set), regression)
    seconds["evaluate"] = time.perf_counter() - clock
    return {"metrics": dev, "metric": task["metric"], "labels": names,
            "train_s": round(seconds["train"], 1), "steps": steps,
            "examples": {"train": len(train_set), "dev": len(dev_set)},
            "stages": {k: round(v, 1) for k, v in seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=list(TASKS), required=True)
    parser.add_argument("--shared", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=float, default=RECIPE["epochs"])
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N rows of train and of dev (a check that it runs)")
    parser.add_argument("--out", type=Path, default=None, help="where the model goes (temp)")
    opts = parser.parse_args()
    out = opts.out or Path(tempfile.mkdtemp(prefix="hf-tasks-"))
    print(json.dumps(run(opts.task, opts.shared, opts.seed, {**RECIPE, "epochs": opts.epochs},
                         out, opts.limit)))


if __name__ == "__main__":
    main()
