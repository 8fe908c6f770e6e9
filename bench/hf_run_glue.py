"""Hugging Face's MRPC fine-tune as one command: the anchor that bench/accuracy.py times against
`bertflow run`. It does what transformers' examples/pytorch/text-classification/run_glue.py does
as a whole (its _no_trainer loop, and the Trainer's samplers): load the tokenizer, tokenize train,
dev and test, fine-tune BertForSequenceClassification from the Hugging Face layout of the same
MiniLM-L3 weights, save it, evaluate dev, predict test (run_glue's predict_results file). Prints
one JSON line: dev accuracy and F1, collapsed, and the seconds of each stage.

    --padding max_length       every pair padded to 128 (run_glue's default, pad_to_max_length)
              longest          each batch cut to its longest pair (DataCollatorWithPadding): the
                               same batches, in the same order, as max_length
              group_by_length  transformers' LengthGroupedSampler, as the Trainer's
                               train_sampling_strategy="group_by_length" (group_by_length=True
                               before transformers 5): shuffled mega-batches of up to 50 batches,
                               each sorted by length, every batch cut to its longest pair; dev and
                               test are read the same way, as the Trainer's eval sampler does
    --precision float32        (default), or bfloat16: forward passes under
                               torch.autocast("cpu", torch.bfloat16), the mixed precision a
                               PyTorch user turns on for a CPU with bfloat16 instructions
    recipe     torch AdamW (decay 0.01 except bias and LayerNorm), linear warmup then decay,
               gradients clipped to 1.0; run_classifier's step count, int(n / batch * epochs),
               full batches only; dev and test in batches of 64, as bertflow's evaluate

    python bench/hf_run_glue.py --shared ../shared --padding longest --seed 1 [--setting JSON]
                                [--precision bfloat16]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data_contracts.reader import read_tsv

PADDINGS = ("max_length", "longest", "group_by_length")
PRECISIONS = ("float32", "bfloat16")
EVAL_BATCH = 64
RECIPE = {"learning_rate": 2e-5, "epochs": 3.0, "batch_size": 32, "warmup_proportion": 0.1}


def encode(tokenizer, path: Path) -> torch.utils.data.TensorDataset:
    """(ids, mask, segments, labels) of a GLUE MRPC TSV, every pair padded to 128 (a batch is cut
    to its longest later, which gives the tensors DataCollatorWithPadding gives); labels are 0
    for test, which has none."""
    frame = read_tsv(path)
    enc = tokenizer(list(frame["#1 String"]), list(frame["#2 String"]), truncation=True,
                    max_length=128, padding="max_length", return_tensors="pt")
    labels = (frame["Quality"].astype(int).to_numpy() if "Quality" in frame
              else np.zeros(len(frame), dtype=int))
    return torch.utils.data.TensorDataset(enc["input_ids"], enc["attention_mask"],
                                          enc["token_type_ids"], torch.tensor(labels))


def cut(batch: list[torch.Tensor], padding: str) -> list[torch.Tensor]:
    """(batch, 128) -> (batch, its longest pair), unless every pair is padded to 128."""
    if padding == "max_length":
        return batch
    width = int(batch[1].sum(1).max())
    return [t[:, :width] if t.dim() == 2 else t for t in batch]


def grouped(dataset, batch_size: int, seed: int):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    lengths = dataset.tensors[1].sum(1).tolist()
    return LengthGroupedSampler(batch_size, lengths=lengths,
                                generator=torch.Generator().manual_seed(seed))


def train_loader(dataset, padding: str, batch_size: int, seed: int):
    """Shuffled full batches, a new order each epoch; grouped by length for group_by_length."""
    if padding == "group_by_length":
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, drop_last=True,
                                           sampler=grouped(dataset, batch_size, seed))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                       drop_last=True,
                                       generator=torch.Generator().manual_seed(seed))


def autocast(precision: str):
    """The forward passes' precision: as is, or torch's CPU autocast to bfloat16."""
    if precision == "bfloat16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def finetune(model, loader, setting: dict, padding: str, precision: str = "float32") -> int:
    """The fine-tune loop of run_glue_no_trainer.py; returns the steps taken."""
    from transformers.optimization import get_linear_schedule_with_warmup

    no_decay = ("bias", "LayerNorm.weight")
    groups = [{"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
               "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)],
               "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=setting["learning_rate"])
    # run_classifier's arithmetic (bert_core.optimizer.train_steps; not imported: keras)
    steps = int(len(loader.dataset) / setting["batch_size"] * setting["epochs"])
    schedule = get_linear_schedule_with_warmup(
        optimizer, int(steps * setting["warmup_proportion"]), steps)
    model.train()
    done = 0
    while done < steps:
        for batch in loader:
            ids, mask, segments, labels = cut(batch, padding)
            with autocast(precision):
                loss = model(input_ids=ids, attention_mask=mask, token_type_ids=segments,
                             labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done == steps:
                break
    return steps


@torch.no_grad()
def predict(model, dataset, padding: str, seed: int, precision: str = "float32") -> np.ndarray:
    """Class probabilities of every pair, in the dataset's order, read in batches of 64 in the
    order the variant's eval sampler gives (sequential, or grouped by length)."""
    n = len(dataset)
    order = (list(grouped(dataset, EVAL_BATCH, seed)) if padding == "group_by_length"
             else list(range(n)))
    model.eval()
    probs = np.zeros((n, 2), dtype=np.float32)
    for start in range(0, n, EVAL_BATCH):
        index = torch.tensor(order[start:start + EVAL_BATCH])
        ids, mask, segments, _ = cut([t[index] for t in dataset.tensors], padding)
        with autocast(precision):
            logits = model(input_ids=ids, attention_mask=mask, token_type_ids=segments).logits
        probs[index.numpy()] = torch.softmax(logits.float(), -1).numpy()
    return probs


def dev_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, F1 and collapsed: as bertflow's evaluate flags it, one class for >= 95% of dev,
    or no better than always answering the majority class."""
    from sklearn.metrics import accuracy_score, f1_score

    predictions = probs.argmax(-1)
    accuracy = float(accuracy_score(labels, predictions))
    majority = max(np.mean(labels), 1 - np.mean(labels))
    share = max(np.mean(predictions), 1 - np.mean(predictions))
    return {"accuracy": accuracy, "f1": float(f1_score(labels, predictions)),
            "collapsed": bool(share >= 0.95 or accuracy <= majority)}


def write_predictions(probs: np.ndarray, path: Path) -> None:
    """run_glue's predict_results_mrpc.txt: index and predicted class per test pair."""
    lines = [f"{i}\t{label}" for i, label in enumerate(probs.argmax(-1))]
    path.write_text("index\tprediction\n" + "\n".join(lines) + "\n")


def run(shared: Path, padding: str, seed: int, setting: dict, out: Path,
        precision: str = "float32") -> dict:
    """The whole command's work, each stage timed: load + tokenize, train (model load, loop,
    save), evaluate dev, predict test."""
    from transformers import AutoTokenizer, BertForSequenceClassification, set_seed

    hf_dir, mrpc = shared / "checkpoints" / "minilm-l3-h384-uncased-hf", shared / "data" / "mrpc"
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    set_seed(seed)
    clock = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    train_set, dev_set, test_set = (encode(tokenizer, mrpc / f"{s}.tsv")
                                    for s in ("train", "dev", "test"))
    seconds, clock = {"tokenize": time.perf_counter() - clock}, time.perf_counter()
    model = BertForSequenceClassification.from_pretrained(hf_dir, num_labels=2)
    steps = finetune(model, train_loader(train_set, padding, setting["batch_size"], seed),
                     setting, padding, precision)
    model.save_pretrained(out / "model")
    seconds["train"], clock = time.perf_counter() - clock, time.perf_counter()
    metrics = dev_metrics(dev_set.tensors[3].numpy(),
                          predict(model, dev_set, padding, seed, precision))
    seconds["evaluate"], clock = time.perf_counter() - clock, time.perf_counter()
    write_predictions(predict(model, test_set, padding, seed, precision),
                      out / "predict_results_mrpc.txt")
    seconds["predict"] = time.perf_counter() - clock
    return {**metrics, "train_s": round(seconds["train"], 1), "steps": steps,
            "stages": {k: round(v, 1) for k, v in seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--padding", choices=PADDINGS, default="max_length")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--setting", type=json.loads, default=RECIPE, metavar="JSON",
                        help="learning_rate, epochs, batch_size, warmup_proportion")
    parser.add_argument("--out", type=Path, default=None, help="model and predictions (temp)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    opts = parser.parse_args()
    out = opts.out or Path(tempfile.mkdtemp(prefix="hf-run-glue-"))
    print(json.dumps(run(opts.shared, opts.padding, opts.seed, {**RECIPE, **opts.setting}, out,
                         opts.precision)))


if __name__ == "__main__":
    main()
