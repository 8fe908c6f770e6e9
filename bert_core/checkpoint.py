"""Pretrained weights in and out: Google's TF1 checkpoints and Hugging Face safetensors.

Conversion lives here, never in the model: `name_table()` is the one explicit map from Keras weight
paths to google-research/bert variable names and Hugging Face parameter names. Both readers return
weights keyed by google-research/bert names in its orientation (kernels `[in, out]`), so one loader
serves both, and the same weights load bit-identically from either file.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bert_core.config import BertConfig
from bert_core.tf_bundle import BundleError, BundleReader, write_bundle

logger = logging.getLogger(__name__)

BACKBONE, POOLER, HEAD = "backbone", "pooler", "head"


class CheckpointError(ValueError):
    """A checkpoint that cannot initialise the model; the message names the file and variable."""


@dataclass(frozen=True)
class WeightName:
    keras: str  # variable path in our model
    google: str  # google-research/bert variable name
    hf: str | None  # Hugging Face BertModel parameter name (without the optional "bert." prefix)
    part: str = BACKBONE  # BACKBONE weights must be in the checkpoint; POOLER and HEAD may start fresh
    hf_transpose: bool = False  # torch Linear weights are [out, in]
    google_transpose: bool = False  # run_classifier's output_weights are [num_labels, hidden]


def _dense(keras: str, google: str, hf: str, part: str = BACKBONE) -> list[WeightName]:
    return [WeightName(f"{keras}/kernel", f"{google}/kernel", f"{hf}.weight", part, hf_transpose=True),
            WeightName(f"{keras}/bias", f"{google}/bias", f"{hf}.bias", part)]


def _layer_norm(keras: str, google: str, hf: str) -> list[WeightName]:
    return [WeightName(f"{keras}/gamma", f"{google}/gamma", f"{hf}.weight"),
            WeightName(f"{keras}/beta", f"{google}/beta", f"{hf}.bias")]


# (our sublayer, google-research/bert scope, Hugging Face scope) inside transformer layer i.
_TRANSFORMER_DENSE = (
    ("query", "attention/self/query", "attention.self.query"),
    ("key", "attention/self/key", "attention.self.key"),
    ("value", "attention/self/value", "attention.self.value"),
    ("attention_output", "attention/output/dense", "attention.output.dense"),
    ("intermediate", "intermediate/dense", "intermediate.dense"),
    ("output", "output/dense", "output.dense"),
)
_TRANSFORMER_NORM = (
    ("attention_layer_norm", "attention/output/LayerNorm", "attention.output.LayerNorm"),
    ("output_layer_norm", "output/LayerNorm", "output.LayerNorm"),
)


def name_table(num_layers: int) -> list[WeightName]:
    """Every weight of `BertClassifier` with its names in both checkpoint formats."""
    table = [
        WeightName("token_embedding/embeddings", "bert/embeddings/word_embeddings",
                   "embeddings.word_embeddings.weight"),
        WeightName("segment_embedding/embeddings", "bert/embeddings/token_type_embeddings",
                   "embeddings.token_type_embeddings.weight"),
        WeightName("position_embedding/embeddings", "bert/embeddings/position_embeddings",
                   "embeddings.position_embeddings.weight"),
        *_layer_norm("embeddings_layer_norm", "bert/embeddings/LayerNorm", "embeddings.LayerNorm"),
    ]
    for i in range(num_layers):
        ours, google, hf = f"transformer_layer_{i}", f"bert/encoder/layer_{i}", f"encoder.layer.{i}"
        for sub, g, h in _TRANSFORMER_DENSE:
            table += _dense(f"{ours}/{sub}", f"{google}/{g}", f"{hf}.{h}")
        for sub, g, h in _TRANSFORMER_NORM:
            table += _layer_norm(f"{ours}/{sub}", f"{google}/{g}", f"{hf}.{h}")
    table += _dense("pooled_dense", "bert/pooler/dense", "pooler.dense", part=POOLER)
    # run_classifier's fine-tuned head; no Hugging Face BertModel counterpart.
    table += [WeightName("logits/kernel", "output_weights", None, HEAD, google_transpose=True),
              WeightName("logits/bias", "output_bias", None, HEAD)]
    return table


@dataclass(frozen=True)
class PretrainedCheckpoint:
    """Weights keyed by google-research/bert names (kernels [in, out]) and the architecture."""

    config: BertConfig
    weights: dict[str, np.ndarray]
    source: str
    format: str  # "google" or "huggingface"


def read_checkpoint(source: str | os.PathLike) -> PretrainedCheckpoint:
    """Read a Google release (`.zip`, directory or `bert_model.ckpt` prefix) or a Hugging Face
    directory (`config.json` + `model.safetensors`)."""
    path = Path(source)
    if path.is_file() and zipfile.is_zipfile(path):
        with tempfile.TemporaryDirectory(prefix="bertflow-ckpt-") as tmp:
            return _read_google(_extract_google_release(path, Path(tmp)), str(path))
    if path.is_dir() and (path / "model.safetensors").is_file():
        return _read_huggingface(path)
    if path.is_dir():
        return _read_google(_google_prefix_in(path, str(path)), str(path))
    if Path(f"{path}.index").is_file():
        return _read_google(path, str(path))
    raise CheckpointError(f"{source}: not a Google BERT release (zip, directory, or checkpoint "
                          f"prefix) nor a Hugging Face directory with model.safetensors")


def find_google_release(folder: Path) -> Path:
    """The folder holding `bert_config.json`: `folder` itself or its one subfolder, as releases
    unpack either way."""
    if (folder / "bert_config.json").is_file():
        return folder
    candidates = sorted(p.parent for p in folder.glob("*/bert_config.json"))
    if len(candidates) != 1:
        raise CheckpointError(f"{folder}: expected bert_config.json at the root or in one "
                              f"folder, found {len(candidates)}")
    return candidates[0]


def _google_prefix_in(directory: Path, source: str) -> Path:
    directory = find_google_release(directory)
    indexes = sorted(directory.glob("*.ckpt.index")) or sorted(directory.glob("*.index"))
    if not indexes:
        raise CheckpointError(f"{source}: expected a *.ckpt.index file beside bert_config.json "
                              f"in {directory}")
    return indexes[0].with_suffix("")


def _extract_google_release(archive: Path, dest: Path) -> Path:
    """Copy the files a release needs (at the zip root or in one folder) into `dest`.

    Files are written under their base names, chosen here, so no archive path can escape `dest`.
    """
    with zipfile.ZipFile(archive) as zf:
        configs = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "bert_config.json"
                   and n.count("/") <= 1]
        if len(configs) != 1:
            raise CheckpointError(f"{archive}: expected one bert_config.json at the root or in "
                                  f"one folder, found {len(configs)}")
        folder = configs[0][: -len("bert_config.json")]
        wanted = [n for n in zf.namelist() if n.startswith(folder) and "/" not in n[len(folder):]
                  and n[len(folder):] and (".ckpt" in n or n.endswith((".json", "vocab.txt")))]
        for name in wanted:
            with zf.open(name) as src, open(dest / name[len(folder):], "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
    return _google_prefix_in(dest, str(archive))


def _check_vocab_file(vocab: Path, config: BertConfig, source: str) -> None:
    if vocab.is_file():
        with open(vocab, "rb") as f:
            lines = sum(1 for _ in f)
        if lines != config.vocab_size:
            raise CheckpointError(f"{source}: vocab.txt has {lines} tokens but the config says "
                                  f"vocab_size {config.vocab_size}")


def _read_google(prefix: Path, source: str) -> PretrainedCheckpoint:
    """The model's weights from a TF1 checkpoint, read without TensorFlow; training leftovers
    (Adam slots, cls/*, global_step) are never loaded."""
    config = BertConfig.from_google_json(prefix.parent / "bert_config.json")
    _check_vocab_file(prefix.parent / "vocab.txt", config, source)
    wanted = {row.google for row in name_table(config.num_hidden_layers)}
    try:
        reader = BundleReader(prefix)
        weights = {name: reader.read(name) for name in reader.entries if name in wanted}
    except (BundleError, OSError) as err:
        raise CheckpointError(f"{source}: cannot read TF checkpoint {prefix}: {err}") from err
    return PretrainedCheckpoint(config, weights, source, "google")


def _read_huggingface(directory: Path) -> PretrainedCheckpoint:
    from safetensors.numpy import load_file

    config = BertConfig.from_hf_json(directory / "config.json")
    _check_vocab_file(directory / "vocab.txt", config, str(directory))
    tensors = load_file(directory / "model.safetensors")
    # Older exports prefix "bert." and spell LayerNorm parameters gamma/beta.
    tensors = {_hf_canonical(name): value for name, value in tensors.items()}
    weights = {}
    for row in name_table(config.num_hidden_layers):
        if row.hf in tensors:
            value = tensors[row.hf]
            weights[row.google] = np.ascontiguousarray(value.T) if row.hf_transpose else value
    return PretrainedCheckpoint(config, weights, str(directory), "huggingface")


def _hf_canonical(name: str) -> str:
    name = name.removeprefix("bert.")
    if ".LayerNorm." in name:
        name = name.replace(".gamma", ".weight").replace(".beta", ".bias")
    return name


@dataclass(frozen=True)
class LoadReport:
    """Each model weight with where its value came from: a checkpoint variable, or None (fresh)."""

    source: str
    rows: list[tuple[str, tuple[int, ...], str | None]] = field(default_factory=list)

    @property
    def fresh(self) -> list[str]:
        return [path for path, _, origin in self.rows if origin is None]

    @property
    def from_checkpoint(self) -> list[str]:
        return [path for path, _, origin in self.rows if origin is not None]

    def format(self) -> str:
        """The table run_classifier logs, with the checkpoint name of each initialised weight."""
        lines = [f"**** Trainable variables (from {self.source}) ****"]
        for path, shape, origin in self.rows:
            where = f"from checkpoint {origin}" if origin else "fresh"
            lines.append(f"  name = {path}, shape = {shape}, {where}")
        return "\n".join(lines)


def load_pretrained(model, checkpoint: PretrainedCheckpoint) -> LoadReport:
    """Copy `checkpoint` into a `BertClassifier` or `BertBackbone`; all checks run before any write.

    Raises CheckpointError on a shape or vocab mismatch, or a backbone weight the checkpoint lacks.
    """
    variables = {v.path: v for v in model.weights}
    table = {row.keras: row for row in name_table(checkpoint.config.num_hidden_layers)}
    unknown = sorted(set(variables) - set(table))
    if unknown:
        raise CheckpointError(f"{checkpoint.source}: model weights {unknown} have no checkpoint "
                              f"name; is the model built from a config with "
                              f"{checkpoint.config.num_hidden_layers} layers?")
    assignments, rows, missing = [], [], []
    for path, variable in variables.items():
        row = table[path]
        value = checkpoint.weights.get(row.google)
        if value is None:
            if row.part == BACKBONE:
                missing.append(row.google)
            rows.append((path, tuple(variable.shape), None))
            continue
        value = value.T if row.google_transpose else value
        _check_shape(checkpoint, row, value.shape, tuple(variable.shape))
        assignments.append((variable, value))
        rows.append((path, tuple(variable.shape), row.google))
    if missing:
        raise CheckpointError(f"{checkpoint.source}: backbone weight(s) missing from the "
                              f"checkpoint: {missing}")
    for variable, value in assignments:
        variable.assign(value)
    report = LoadReport(checkpoint.source, rows)
    logger.info("%s", report.format())
    return report


def _check_shape(checkpoint: PretrainedCheckpoint, row: WeightName, got: tuple, want: tuple):
    if tuple(got) == want:
        return
    if row.keras == "token_embedding/embeddings":
        raise CheckpointError(f"{checkpoint.source}: vocab mismatch: {row.google} has "
                              f"{got[0]} rows but the model's vocab_size is {want[0]}")
    raise CheckpointError(f"{checkpoint.source}: shape mismatch for {row.google}: checkpoint "
                          f"{tuple(got)}, model {row.keras} {want}")


def google_weights(model) -> dict[str, np.ndarray]:
    """The model's weights under google-research/bert names, ready for `save_google_checkpoint`."""
    table = {row.keras: row for row in name_table(len(_transformer_layers(model)))}
    out = {}
    for variable in model.weights:
        row = table[variable.path]
        value = np.asarray(variable.numpy())
        out[row.google] = value.T if row.google_transpose else value
    return out


def _transformer_layers(model) -> list[str]:
    return sorted({v.path.split("/")[0] for v in model.weights
                   if v.path.startswith("transformer_layer_")})


def save_google_checkpoint(weights: dict[str, np.ndarray], prefix: str | os.PathLike) -> Path:
    """Write a TF1 name-based checkpoint (`prefix.index` + `prefix.data-*`) that
    google-research/bert's `init_from_checkpoint` and `read_checkpoint` both read; no
    TensorFlow needed."""
    return write_bundle(weights, prefix)
