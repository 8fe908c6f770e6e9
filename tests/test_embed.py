"""`bertflow embed`: sentence vectors equal to the encoder layers' outputs computed directly,
pooled by [CLS] or by the mean of real tokens, layers concatenated in the order asked; from a
pretrained checkpoint and from a registered model; rows with no text in the rejects file."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bert_core.checkpoint import load_pretrained, read_checkpoint
from bert_core.features import encode_pairs
from bert_core.model import BertBackbone
from bert_core.tokenization import FullTokenizer
from tasks.embed import EmbedConfig, checkpoint_encoder, embed_file, registered_encoder
from tasks.mlflow_store import using_tracking_uri
from tests import test_predict
from tests.fixtures import run_bertflow, tiny_vocab, write_release_zip

home = test_predict.home  # the fixture: a store with a champion of each of its tasks

TEXTS = ["the company said its shares rose .", "analysts expected lower sales",
         "profit reports beat forecasts on monday while analysts expected lower sales of cars",
         "new cars"]


def direct(backbone, tokenizer, texts, layers, pooling, max_seq_length, texts_b=None):
    """The vectors computed here from the backbone's own getters, padded to max_seq_length."""
    features = encode_pairs(tokenizer, texts, texts_b, max_seq_length)
    every = [np.asarray(h) for h in backbone.get_all_encoder_layers(features.as_dict())]
    mask = features.input_mask[:, :, None].astype(np.float64)
    parts = [every[i][:, 0, :] if pooling == "cls" else
             (every[i] * mask).sum(axis=1) / mask.sum(axis=1) for i in layers]
    return np.concatenate(parts, axis=1)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_release_zip(tmp_path_factory.mktemp("ckpt") / "tiny.zip", hidden=16, layers=3)


@pytest.fixture(scope="module")
def pretrained(release):
    ckpt = read_checkpoint(release)
    backbone = BertBackbone(ckpt.config)
    load_pretrained(backbone, ckpt)
    return backbone, FullTokenizer.from_tokens(tiny_vocab())


def texts_file(path, texts):
    pd.DataFrame({"doc": [f"d{i}" for i in range(len(texts))], "text": texts}).to_parquet(path)
    return path


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_vectors_from_a_checkpoint_are_its_layers_pooled(release, pretrained, tmp_path,
                                                         pooling):
    source, out = texts_file(tmp_path / "in.parquet", [*TEXTS, ""]), tmp_path / "vectors.parquet"
    cfg = EmbedConfig(input=str(source), output=str(out), checkpoint=str(release),
                      layers=(-1, -3), pooling=pooling, task="custom", id="doc", chunk_rows=3)
    summary = embed_file(checkpoint_encoder(cfg), cfg)

    table = pq.read_table(out)
    assert table.column_names == ["doc", "embedding"]
    kind = table.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(kind) and kind.list_size == 32  # two layers of 16
    assert kind.value_type == pa.float32()
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta == {"bertflow.layers": "-1,-3", "bertflow.pooling": pooling,
                    "bertflow.model": str(release), "bertflow.max_seq_length": "128"}
    got = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    backbone, tokenizer = pretrained
    expected = direct(backbone, tokenizer, TEXTS, [2, 0], pooling, 128)
    assert table.column("doc").to_pylist() == ["d0", "d1", "d2", "d3"]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert not np.allclose(got[:, :16], got[:, 16:])  # two different layers, in that order
    rejects = pd.read_csv(tmp_path / "vectors.rejects.csv", dtype=str)
    assert rejects.values.tolist() == [["5", "d4", "text", "empty text"]]
    assert (summary.scored, summary.rejected) == (4, 1)


def test_vectors_from_the_registered_champion_are_its_backbones(home, tmp_path):
    source, out = tmp_path / "pairs.csv", tmp_path / "vectors.parquet"
    pd.DataFrame({"a": TEXTS, "b": TEXTS[::-1]}).to_csv(source, index=False)
    cfg = EmbedConfig(input=str(source), output=str(out), home=str(home), task="custom",
                      text_a="a", text_b="b", layers=(-1,), pooling="mean", model_uri=None)
    embed_file(registered_encoder(cfg.model_copy(update={"task": "mrpc"})), cfg)

    with using_tracking_uri(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"):
        inner = mlflow.pyfunc.load_model("models:/bertflow-mrpc@champion").unwrap_python_model()
    expected = direct(inner.model.backbone, inner.tokenizer, TEXTS, [0], "mean",
                      inner.max_seq_length, TEXTS[::-1])
    table = pq.read_table(out)
    assert table.column("row").to_pylist() == [1, 2, 3, 4]
    assert table.schema.metadata[b"bertflow.model"] == b"models:/bertflow-mrpc/1"
    np.testing.assert_allclose(np.stack(table.column("embedding").to_numpy(
        zero_copy_only=False)), expected, atol=1e-5, rtol=0)


def test_bertflow_embed_writes_vectors_and_refuses_a_layer_the_encoder_lacks(release,
                                                                             pretrained,
                                                                             tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "vectors.parquet"
    source.write_text("".join(f'{{"text": "{t}"}}\n' for t in TEXTS))
    home = tmp_path / "home"
    done = run_bertflow(["embed", "--input", str(source), "--output", str(out), "--checkpoint",
                         str(release), "--layers", "-2", "--pooling", "cls", "--task", "custom",
                         "--max-seq-length", "32"], home)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "embedded 4 of 4 rows (0 rejected)" in done.stdout
    got = np.stack(pq.read_table(out).column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(got, direct(*pretrained, TEXTS, [1], "cls", 32), atol=1e-5)

    done = run_bertflow(["embed", "--input", str(source), "--output", str(tmp_path / "x.parquet"),
                         "--checkpoint", str(release), "--layers", "-4", "--task", "custom"],
                        home)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "layer -4: the encoder has layers 0..2 (or -3..-1)" in " ".join(done.stderr.split())
    assert not (tmp_path / "x.parquet").exists()
