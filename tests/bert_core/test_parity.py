"""Reference parity with Hugging Face transformers on PyTorch (extra `parity`)."""

from __future__ import annotations

import numpy as np
import pytest

from bert_core.checkpoint import load_pretrained, read_checkpoint
from bert_core.features import encode_pairs
from bert_core.model import BertBackbone
from bert_core.tokenization import FullTokenizer
from tests.conftest import GOLDEN_A, GOLDEN_B

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.mark.shared
def test_sequence_output_matches_hugging_face_bert_model(shared):
    hf_dir = shared / "checkpoints" / "minilm-l3-h384-uncased-hf"
    features = encode_pairs(FullTokenizer(hf_dir / "vocab.txt"), [GOLDEN_A], [GOLDEN_B], 128)

    ckpt = read_checkpoint(hf_dir)
    assert ckpt.config.hidden_act == "gelu_exact"
    ours = BertBackbone(ckpt.config)
    load_pretrained(ours, ckpt)
    got = np.asarray(ours(features.as_dict(), training=False)["sequence_output"])

    reference = transformers.BertModel.from_pretrained(hf_dir, add_pooling_layer=False).eval()
    with torch.no_grad():
        out = reference(input_ids=torch.from_numpy(features.input_ids).long(),
                        attention_mask=torch.from_numpy(features.input_mask).long(),
                        token_type_ids=torch.from_numpy(features.segment_ids).long())
    want = out.last_hidden_state.numpy()
    assert got.shape == want.shape == (1, 128, 384)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
