"""BertConfig from both file formats, and the two meanings of "gelu"."""

from __future__ import annotations

import json

import pytest

from bert_core.config import BertConfig, ConfigError

BASE = {"vocab_size": 30522, "hidden_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 512, "max_position_embeddings": 512,
        "type_vocab_size": 2, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02}


def write(tmp_path, name, values):
    path = tmp_path / name
    path.write_text(json.dumps(values))
    return path


def test_google_gelu_is_the_tanh_approximation(tmp_path):
    cfg = BertConfig.from_google_json(write(tmp_path, "bert_config.json",
                                            {**BASE, "hidden_act": "gelu"}))
    assert cfg == BertConfig.tiny()
    assert cfg.hidden_act == "gelu_tanh"


@pytest.mark.parametrize("act,expected", [("gelu", "gelu_exact"), ("gelu_new", "gelu_tanh"),
                                          ("relu", "relu")])
def test_hugging_face_activation_names(tmp_path, act, expected):
    path = write(tmp_path, "config.json", {**BASE, "model_type": "bert", "hidden_act": act,
                                           "layer_norm_eps": 1e-7})
    cfg = BertConfig.from_json_file(path)
    assert (cfg.hidden_act, cfg.layer_norm_eps) == (expected, 1e-7)


def test_google_round_trip(tmp_path):
    cfg = BertConfig.tiny()
    assert BertConfig.from_google_json(write(tmp_path, "c.json", cfg.to_google_dict())) == cfg


@pytest.mark.parametrize("values,message", [
    ({**BASE, "hidden_act": "mish"}, "hidden_act 'mish' is not supported"),
    ({k: v for k, v in BASE.items() if k != "hidden_size"}, r"missing required field\(s\) \['hidden_size'\]"),
    ({**BASE, "num_attention_heads": 3}, "not a multiple"),
])
def test_bad_configs_name_the_file_and_field(tmp_path, values, message):
    path = write(tmp_path, "bert_config.json", values)
    with pytest.raises(ConfigError, match=message) as info:
        BertConfig.from_google_json(path)
    assert str(path) in str(info.value)


def test_unreadable_file_is_a_config_error(tmp_path):
    path = tmp_path / "bert_config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="bert_config.json: cannot read"):
        BertConfig.from_google_json(path)


# modeling.py's BertConfig methods: from_dict, to_dict, to_json_string, from_json_file.

MULTILINGUAL_EXTRAS = {"directionality": "bidi", "pooler_fc_size": 768,
                       "pooler_type": "first_token_transform", "pooler_num_attention_heads": 12,
                       "pooler_num_fc_layers": 3, "pooler_size_per_head": 128}


def test_from_dict_reads_a_google_config_and_ignores_extra_keys(tmp_path):
    values = {**BASE, "hidden_act": "gelu", **MULTILINGUAL_EXTRAS}
    cfg = BertConfig.from_dict(values)
    assert cfg == BertConfig.tiny()
    assert cfg == BertConfig.from_google_json(write(tmp_path, "c.json", values))


@pytest.mark.parametrize("act", ["gelu_tanh", "gelu_exact", "relu"])
def test_dict_and_json_string_round_trips(tmp_path, act):
    cfg = BertConfig(**{**BertConfig.tiny().to_dict(), "hidden_act": act, "layer_norm_eps": 1e-7})
    assert BertConfig.from_dict(cfg.to_dict()) == cfg
    text = cfg.to_json_string()
    first_field = '  "attention_probs_dropout_prob": 0.1,'  # sorted keys, two-space indent
    assert text.endswith("}\n") and text.splitlines()[1] == first_field
    assert json.loads(text) == cfg.to_dict()
    path = tmp_path / "bert_config.json"
    path.write_text(text)
    assert BertConfig.from_json_file(path) == cfg


def test_from_dict_keeps_defaults_and_rejects_unknown_activations():
    partial = BertConfig.from_dict({"hidden_size": 128, "num_attention_heads": 2})
    assert (partial.hidden_size, partial.num_hidden_layers) == (128, 12)
    with pytest.raises(ConfigError, match="hidden_act 'mish' is not supported"):
        BertConfig.from_dict({**BASE, "hidden_act": "mish"})
