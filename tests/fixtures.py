"""Small MRPC-shaped data and a tiny BERT release, generated for tests (no ../shared needed)."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
WORDS = ("the company said its shares rose in early trading on monday after profit "
         "reports beat forecasts while analysts expected lower sales of new cars").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", '"', "'", ",", ".", "-", "s", "t"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (a server started next may take it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)) + " ."


def write_msr_files(folder: Path, train_rows: int = 24, test_rows: int = 8,
                    dev_every: int = 4, seed: int = 0) -> Path:
    """msr_paraphrase_train.txt, msr_paraphrase_test.txt and dev_ids.tsv in MSR's format (BOM,
    unbalanced quotes); every `dev_every`-th train row goes to dev."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    dev = []
    for name, rows, first_id in (("msr_paraphrase_train.txt", train_rows, 1000),
                                 ("msr_paraphrase_test.txt", test_rows, 9000)):
        lines = [HEADER]
        for i in range(rows):
            a, b = first_id + 2 * i, first_id + 2 * i + 1
            s1 = ('" ' if i % 5 == 0 else "") + _sentence(rng, rng.randint(4, 12))
            lines.append(f"{i % 2}\t{a}\t{b}\t{s1}\t{_sentence(rng, rng.randint(4, 12))}\n")
            if name.endswith("train.txt") and i % dev_every == dev_every - 1:
                dev.append(f"{a}\t{b}\n")
        (folder / name).write_text("".join(lines), encoding="utf-8")
    (folder / "dev_ids.tsv").write_text("".join(dev), encoding="utf-8")
    return folder


def tiny_vocab() -> list[str]:
    pieces = sorted(set(WORDS))
    return SPECIAL + pieces + ["##" + w for w in ("s", "ed", "ing")]


def write_release_zip(path: Path, hidden: int = 16, layers: int = 1, seed: int = 0,
                      inside: str = "") -> Path:
    """A Google-layout BERT release zip (bert_config.json, bert_model.ckpt.*, vocab.txt) with random
    weights, optionally inside one folder."""
    import keras

    from bert_core.checkpoint import google_weights, save_google_checkpoint
    from bert_core.config import BertConfig
    from bert_core.model import BertBackbone

    vocab = tiny_vocab()
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden,
                        max_position_embeddings=128)
    keras.utils.set_random_seed(seed)
    weights = google_weights(BertBackbone(config))
    staging = path.parent / f".{path.name}.staging"
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "bert_config.json").write_text(json.dumps(config.to_google_dict()))
    (staging / "vocab.txt").write_text("".join(t + "\n" for t in vocab))
    save_google_checkpoint(weights, staging / "bert_model.ckpt")
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(staging.iterdir()):
            zf.write(file, inside + file.name)
    return path


def run_bertflow(args: list[str], home: Path, stdin: str | None = None,
                 timeout_s: float = 600, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess:
    """The installed `bertflow` command in a fresh process, as a user runs it: no Prefect
    settings inherited (it starts its own temporary Prefect server under `home`), working
    directory beside `home`; `env` adds to the environment (a None value removes the name)."""
    exe = Path(sys.executable).with_name("bertflow")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env = {k: v for k, v in {**inherited, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                             "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}.items() if v is not None}
    return subprocess.run([str(exe), *args, "--home", str(home)], input=stdin, env=env,
                          capture_output=True, text=True, timeout=timeout_s, cwd=home.parent)


STAGES = ["download", "validate", "tokenize", "train", "evaluate", "register"]
# The fine-tune flow's task runs, in order, when there is no champion yet (with one, score-champion
# runs before register).
FLOW_TASKS = ["find-drop", "download", "champion", "validate", "profile", "evaluation-set",
              "drift", "tokenize", "train", "evaluate", "register"]
