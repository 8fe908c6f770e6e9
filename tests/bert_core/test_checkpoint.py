"""Checkpoint loading: Google releases and Hugging Face directories, reports and failures."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from bert_core.checkpoint import (CheckpointError, google_weights, load_pretrained, name_table,
                                  read_checkpoint, save_google_checkpoint)
from bert_core.model import BertBackbone, BertClassifier

HEAD_AND_POOLER = ["pooled_dense/kernel", "pooled_dense/bias", "logits/kernel", "logits/bias"]


def classifier(config, seed=None):
    import keras

    if seed is not None:
        keras.utils.set_random_seed(seed)
    return BertClassifier(BertBackbone(config, name="bert"), num_labels=2)


def write_release(folder, config, weights, vocab_size=None):
    """A Google-style release folder: bert_config.json, bert_model.ckpt.*, vocab.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bert_config.json").write_text(json.dumps(config.to_google_dict()))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tokens += [f"w{i}" for i in range((vocab_size or config.vocab_size) - len(tokens))]
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in tokens))
    save_google_checkpoint(weights, folder / "bert_model.ckpt")
    return folder


def zip_folder(folder, archive, inside=""):
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, inside + path.name)
    return archive


def assert_same_weights(a, b, paths=None):
    b_values = {v.path: v.numpy() for v in b.weights}
    for v in a.weights:
        if paths is None or v.path in paths:
            np.testing.assert_array_equal(v.numpy(), b_values[v.path], err_msg=v.path)


@pytest.mark.shared
def test_google_zip_and_hugging_face_directory_load_bit_identical(shared):
    google = read_checkpoint(shared / "checkpoints" / "minilm-l3-h384-uncased.zip")
    hf = read_checkpoint(shared / "checkpoints" / "minilm-l3-h384-uncased-hf")
    assert (google.format, hf.format) == ("google", "huggingface")
    a, b = classifier(google.config), classifier(hf.config)
    report_a, report_b = load_pretrained(a, google), load_pretrained(b, hf)
    backbone = [p for p in report_a.from_checkpoint]
    assert len(backbone) == 5 + 16 * 3  # embeddings + 16 weights per transformer layer
    assert_same_weights(a, b, set(backbone))
    assert report_a.fresh == report_b.fresh == HEAD_AND_POOLER  # MiniLM ships no pooler
    assert "fresh" in report_a.format() and "bert/encoder/layer_2/output/dense/kernel" in report_a.format()


def test_google_release_in_a_folder_with_training_leftovers(tmp_path, micro_config):
    """Real releases hold cls/*, global_step and Adam slots, sometimes inside a folder."""
    trained = classifier(micro_config, seed=1)
    weights = google_weights(trained)
    leftovers = {"cls/predictions/output_bias": np.zeros(micro_config.vocab_size, np.float32),
                 "cls/seq_relationship/output_weights": np.zeros((2, 32), np.float32),
                 "global_step": np.array(1000, np.int64),
                 "bert/pooler/dense/kernel/adam_m": np.ones((32, 32), np.float32)}
    release = write_release(tmp_path / "uncased_L-2_H-32_A-2", micro_config,
                            {**weights, **leftovers})
    archive = zip_folder(release, tmp_path / "release.zip", inside="uncased_L-2_H-32_A-2/")
    for source in (archive, release, release / "bert_model.ckpt"):
        fresh = classifier(micro_config, seed=2)
        report = load_pretrained(fresh, read_checkpoint(source))
        assert report.fresh == []  # run_classifier's output_weights/output_bias fill the head
        assert_same_weights(fresh, trained)


def test_pretrained_only_release_leaves_head_fresh(tmp_path, micro_config):
    weights = google_weights(classifier(micro_config, seed=1))
    del weights["output_weights"], weights["output_bias"]
    report = load_pretrained(classifier(micro_config),
                             read_checkpoint(write_release(tmp_path / "r", micro_config, weights)))
    assert report.fresh == ["logits/kernel", "logits/bias"]


def test_hugging_face_names_with_bert_prefix_and_gamma_beta(tmp_path, micro_config):
    trained = classifier(micro_config, seed=3)
    weights = google_weights(trained)
    tensors = {}
    for row in name_table(micro_config.num_hidden_layers):
        if row.hf is None:
            continue
        name = "bert." + row.hf.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta")
        value = weights[row.google]
        tensors[name] = np.ascontiguousarray(value.T if row.hf_transpose else value)
    save_file(tensors, tmp_path / "model.safetensors")
    hf_config = {**micro_config.to_google_dict(), "model_type": "bert", "hidden_act": "gelu_new"}
    (tmp_path / "config.json").write_text(json.dumps(hf_config))
    fresh = classifier(micro_config)
    report = load_pretrained(fresh, read_checkpoint(tmp_path))
    assert report.fresh == ["logits/kernel", "logits/bias"]
    assert_same_weights(fresh, trained, set(report.from_checkpoint))


def test_missing_backbone_weight_is_an_error_not_a_random_init(tmp_path, micro_config):
    weights = google_weights(classifier(micro_config))
    del weights["bert/encoder/layer_1/attention/self/key/bias"]
    ckpt = read_checkpoint(write_release(tmp_path / "r", micro_config, weights))
    model = classifier(micro_config)
    before = model.weights[0].numpy().copy()
    with pytest.raises(CheckpointError, match="missing.*layer_1/attention/self/key/bias"):
        load_pretrained(model, ckpt)
    np.testing.assert_array_equal(model.weights[0].numpy(), before)  # nothing half-loaded


def test_shape_mismatch_names_the_variable(tmp_path, micro_config):
    weights = google_weights(classifier(micro_config))
    weights["bert/encoder/layer_0/intermediate/dense/kernel"] = np.zeros((32, 65), np.float32)
    ckpt = read_checkpoint(write_release(tmp_path / "r", micro_config, weights))
    with pytest.raises(CheckpointError,
                       match=r"shape mismatch for bert/encoder/layer_0/intermediate/dense/kernel: "
                             r"checkpoint \(32, 65\)"):
        load_pretrained(classifier(micro_config), ckpt)


def test_vocab_mismatch_is_named(tmp_path, micro_config):
    from dataclasses import replace

    ckpt = read_checkpoint(write_release(tmp_path / "r", micro_config,
                                         google_weights(classifier(micro_config))))
    bigger = replace(micro_config, vocab_size=80)
    with pytest.raises(CheckpointError, match="vocab mismatch: bert/embeddings/word_embeddings "
                                              "has 64 rows but the model's vocab_size is 80"):
        load_pretrained(classifier(bigger), ckpt)
    write_release(tmp_path / "short", micro_config, google_weights(classifier(micro_config)),
                  vocab_size=60)
    with pytest.raises(CheckpointError, match="vocab.txt has 60 tokens but the config says "
                                              "vocab_size 64"):
        read_checkpoint(tmp_path / "short")


@pytest.mark.parametrize("make", [
    lambda tmp: tmp,  # an empty directory
    lambda tmp: (tmp / "notes.txt").write_text("hi") and tmp / "notes.txt",
    lambda tmp: zip_folder(tmp, tmp.parent / "empty.zip"),
])
def test_not_a_checkpoint(tmp_path, make):
    source = make(tmp_path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(source)
    assert str(source) in str(info.value)
