"""BertConfig: the architecture, read from Google's `bert_config.json` or Hugging Face's `config.json`.

The two files spell the same fields differently, and "gelu" means different functions in them:
google-research/bert's `gelu` is the tanh approximation, Hugging Face's `gelu` is the exact erf form
(its tanh form is `gelu_new`). The config stores the unambiguous name.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Activation names used here, and how each file format spells them.
ACTIVATIONS = ("gelu_tanh", "gelu_exact", "relu", "tanh", "silu", "linear")
_GOOGLE_ACTIVATIONS = {"gelu": "gelu_tanh", "relu": "relu", "tanh": "tanh", "linear": "linear"}
_HF_ACTIVATIONS = {"gelu": "gelu_exact", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                   "relu": "relu", "tanh": "tanh", "silu": "silu", "swish": "silu",
                   "linear": "linear"}
# Names a google-research/bert style dict may hold: its own spellings and ours (unambiguous).
_READABLE_ACTIVATIONS = {**{name: name for name in ACTIVATIONS}, **_GOOGLE_ACTIVATIONS}


class ConfigError(ValueError):
    """A config file that cannot describe a BERT model; the message names the file and field."""


@dataclass(frozen=True)
class BertConfig:
    """BERT architecture hyper-parameters; defaults are BERT-Base as google-research/bert has them."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu_tanh"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not one of {ACTIVATIONS}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of "
                              f"num_attention_heads {self.num_attention_heads}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def tiny(cls) -> BertConfig:
        """BERT-Tiny (uncased_L-2_H-128_A-2), the default model and the one tests train."""
        return cls(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=512)

    def to_dict(self) -> dict[str, Any]:
        """All fields, `hidden_act` by its unambiguous name (`gelu_tanh`, not `gelu`)."""
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        """`to_dict()` as indented JSON with sorted keys, as modeling.py's BertConfig writes it.

        `from_json_file` reads it back; `to_google_dict` gives what google-research/bert reads.
        """
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BertConfig:
        """A config from `to_dict()` output or a parsed `bert_config.json`.

        As in modeling.py, absent fields keep their defaults and `"gelu"` is the tanh form; keys
        that are not fields (the `pooler_*` and `directionality` of the multilingual configs) are
        ignored, where the original stored them as attributes.

        >>> BertConfig.from_dict({"hidden_act": "gelu", "directionality": "bidi"}).hidden_act
        'gelu_tanh'
        """
        values = _known_fields(cls, values)
        if "hidden_act" in values:
            values["hidden_act"] = _activation(values["hidden_act"], _READABLE_ACTIVATIONS)
        return cls(**values)

    def to_google_dict(self) -> dict[str, Any]:
        """The fields as google-research/bert's `bert_config.json` spells them."""
        spelling = {ours: theirs for theirs, ours in _GOOGLE_ACTIVATIONS.items()}
        if self.hidden_act not in spelling:
            raise ConfigError(f"hidden_act {self.hidden_act!r} has no google-research/bert name")
        values = self.to_dict()
        del values["layer_norm_eps"]  # fixed at 1e-12 there
        return {**values, "hidden_act": spelling[self.hidden_act]}

    @classmethod
    def from_google_json(cls, path: str | os.PathLike) -> BertConfig:
        """Read google-research/bert's `bert_config.json` (or a `to_json_string()` file)."""
        raw = _read_json(path)
        return _build(cls, raw, path, _READABLE_ACTIVATIONS)

    @classmethod
    def from_hf_json(cls, path: str | os.PathLike) -> BertConfig:
        """Read a Hugging Face BERT `config.json`."""
        raw = _read_json(path)
        model_type = raw.get("model_type", "bert")
        if model_type != "bert":
            raise ConfigError(f"{path}: model_type is {model_type!r}, expected 'bert'")
        return _build(cls, raw, path, _HF_ACTIVATIONS)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> BertConfig:
        """Either format: a file with `model_type` or `architectures` is Hugging Face's."""
        raw = _read_json(path)
        hf = "model_type" in raw or "architectures" in raw
        return cls.from_hf_json(path) if hf else cls.from_google_json(path)


def _read_json(path: str | os.PathLike) -> dict[str, Any]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot read a JSON config: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw


def _activation(act: str, activations: dict[str, str]) -> str:
    """Our name for a file's `hidden_act` spelling."""
    if act not in activations:
        raise ConfigError(f"hidden_act {act!r} is not supported (known: {sorted(activations)})")
    return activations[act]


def _known_fields(cls: type[BertConfig], raw: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


def _build(cls: type[BertConfig], raw: dict[str, Any], path: str | os.PathLike,
           activations: dict[str, str]) -> BertConfig:
    values = _known_fields(cls, raw)
    try:
        values["hidden_act"] = _activation(raw.get("hidden_act", "gelu"), activations)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    missing = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size"} - values.keys()
    if missing:
        raise ConfigError(f"{path}: missing required field(s) {sorted(missing)}")
    try:
        return cls(**values)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
