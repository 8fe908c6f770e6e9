"""Sentence vectors from BERT's encoder layers, as google-research/bert's extract_features.py
reads them, pooled to one vector per text.

    vectors = SentenceEncoder(backbone, layers=(-1, -2), pooling="mean").encode(features)
    # (n, 2 * hidden) float32: the last layer's pooled vector, then the one before it

`layers` index the encoder layers as extract_features' --layers do (-1: the last); `pooling` is
"cls" (the [CLS] position's vector) or "mean" (the mean over real tokens, by the input mask).
The chosen layers' vectors are concatenated in the order given. Rows are run in length-sorted
batches cut to their own longest row (bert_core/predict.py): padding changes no real token's
vector, so the result is that of padding to max_seq_length up to float rounding.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import keras
import numpy as np

from bert_core.features import Features
from bert_core.model import BertBackbone
from bert_core.predict import length_batches

Pooling = Literal["cls", "mean"]
POOLINGS = ("cls", "mean")


def layer_numbers(layers: Sequence[int], num_layers: int) -> list[int]:
    """The encoder layers meant by `layers` (negative: from the last), as 0-based numbers.

    >>> layer_numbers([-1, -2, 0], 4)
    [3, 2, 0]
    >>> layer_numbers([4], 4)
    Traceback (most recent call last):
    ...
    ValueError: layer 4: the encoder has layers 0..3 (or -4..-1)
    """
    numbers = []
    for layer in layers:
        if not -num_layers <= layer < num_layers:
            raise ValueError(f"layer {layer}: the encoder has layers 0..{num_layers - 1} "
                             f"(or -{num_layers}..-1)")
        numbers.append(layer % num_layers)
    if not numbers:
        raise ValueError("no layers chosen")
    return numbers


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: Pooling) -> np.ndarray:
    """One vector per row of `hidden` (batch, seq, width): the first position's, or the mean of
    the positions `mask` (batch, seq) marks.

    >>> hidden = np.array([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
    >>> pool(hidden, np.array([[1, 1, 0]]), "cls").tolist(), pool(hidden, np.array([[1, 1, 0]]),
    ...                                                        "mean").tolist()
    ([[1.0, 2.0]], [[2.0, 3.0]])
    """
    if pooling == "cls":
        return hidden[:, 0, :]
    if pooling != "mean":
        raise ValueError(f"pooling {pooling!r}: one of {', '.join(POOLINGS)}")
    weights = mask.astype(hidden.dtype)[:, :, None]  # (batch, seq, 1)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)


class SentenceEncoder:
    """A backbone's chosen encoder layers, pooled and concatenated: `encode(features)` gives
    (n, len(layers) * hidden) float32 in row order."""

    def __init__(self, backbone: BertBackbone, layers: Sequence[int] = (-1),
                 pooling: Pooling = "cls", batch_size: int = 64):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: one of {', '.join(POOLINGS)}")
        self.numbers = layer_numbers(list(layers), backbone.bert_config.num_hidden_layers)
        self.pooling, self.batch_size = pooling, batch_size
        self.width = backbone.bert_config.hidden_size * len(self.numbers)
        outputs = [backbone.get_layer(f"transformer_layer_{i}").output
                   for i in sorted(set(self.numbers))]
        # A view on the backbone's own graph, up to the deepest layer chosen (later ones not run).
        self.view = keras.Model(backbone.input, outputs, name=f"{backbone.name}_layers")
        self.order = sorted(set(self.numbers))

    def encode(self, features: Features) -> np.ndarray:
        mask = features.input_mask
        n, max_width = mask.shape
        out = np.zeros((n, self.width), np.float32)
        for rows, width in length_batches(mask.sum(axis=1), self.batch_size, max_width):
            batch = {name: values[rows, :width] for name, values in features.as_dict().items()}
            found = self.view.predict_on_batch(batch)
            found = found if isinstance(found, (list, tuple)) else [found]
            by_layer = dict(zip(self.order, found))
            out[rows] = np.concatenate(
                [pool(np.asarray(by_layer[i], np.float32), batch["input_mask"], self.pooling)
                 for i in self.numbers], axis=1)
        return out


def checkpoint_vocab(source: str | Path, into: Path) -> Path:
    """The vocab.txt of a checkpoint: beside its files, or copied out of its zip into `into`."""
    path = Path(source)
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "vocab.txt"
                     and n.count("/") <= 1]
            if len(names) != 1:
                raise FileNotFoundError(f"{path}: expected one vocab.txt in the zip, found "
                                        f"{len(names)}")
            into.mkdir(parents=True, exist_ok=True)
            (into / "vocab.txt").write_bytes(zf.read(names[0]))
            return into / "vocab.txt"
    folder = path if path.is_dir() else path.parent
    found = sorted(folder.glob("vocab.txt")) or sorted(folder.glob("*/vocab.txt"))
    if not found:
        raise FileNotFoundError(f"{source}: the checkpoint has no vocab.txt")
    return found[0]


def checkpoint_lower_case(source: str | Path) -> bool:
    """Whether a checkpoint's vocab is uncased: its tokenizer_config.json's do_lower_case
    (Hugging Face), else its name ("cased" without "uncased": False), else True.

    >>> checkpoint_lower_case("/ckpt/cased_L-12_H-768_A-12.zip"), checkpoint_lower_case("x.zip")
    (False, True)
    """
    config = Path(source) / "tokenizer_config.json"
    if config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get("do_lower_case")
        if isinstance(value, bool):
            return value
    name = Path(source).name.lower()
    return not ("cased" in name and "uncased" not in name)
