"""TensorFlow checkpoint files without TensorFlow: bert_core.tf_bundle against TF's own reader and
writer, corrupt files, and read_checkpoint in a process where TensorFlow cannot be imported."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

from bert_core.sstable import BLOCK_SIZE
from bert_core.tf_bundle import BundleError, BundleReader, read_bundle, write_bundle
from tests.fixtures import write_release_zip

REPO = Path(__file__).resolve().parents[2]


def mixed_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Every supported dtype, a scalar, empty shapes, and enough names for several table blocks
    and restart points."""
    rng = np.random.default_rng(seed)
    weights = {f"bert/encoder/layer_{i}/attention/self/query/kernel": rng.standard_normal(
        (2, 3)).astype(np.float32) for i in range(300)}
    weights.update({
        "float64": rng.standard_normal((4, 5)),
        "float16": rng.standard_normal(7).astype(np.float16),
        "bfloat16": rng.standard_normal((3, 2)).astype(ml_dtypes.bfloat16),
        "int32": rng.integers(-2**31, 2**31, (2, 2, 2), dtype=np.int32),
        "int64": rng.integers(-2**63, 2**63, 5, dtype=np.int64),
        "int8": rng.integers(-128, 128, 9, dtype=np.int8),
        "uint8": rng.integers(0, 256, 9, dtype=np.uint8),
        "bool": rng.random(6) < 0.5,
        "global_step": np.array(1000, np.int64),  # a scalar
        "empty": np.zeros((0,), np.float32),
        "empty_inside": np.zeros((3, 0, 2), np.float16),
        "transposed": rng.standard_normal((3, 4)).astype(np.float32).T,  # not C-contiguous
        "big": rng.standard_normal((300, 100)).astype(np.float32),
    })
    return weights


def tensorflow_tensors(prefix) -> dict[str, np.ndarray]:
    """What TensorFlow's reader sees in a checkpoint, string tensors left out."""
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name, dtype in
            reader.get_variable_to_dtype_map().items() if dtype != tf.string}


def assert_identical(got: dict[str, np.ndarray], want: dict[str, np.ndarray]):
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        value = np.asarray(value)
        assert (got[name].dtype, got[name].shape) == (value.dtype, value.shape), name
        assert got[name].tobytes() == value.tobytes(), name  # bit for bit, NaN or not


def test_our_bundle_reads_back_identically_in_tensorflow_and_here(tmp_path):
    weights = mixed_weights()
    prefix = write_bundle(weights, tmp_path / "new" / "bert_model.ckpt")
    assert sorted(p.name for p in prefix.parent.iterdir()) == [
        "bert_model.ckpt.data-00000-of-00001", "bert_model.ckpt.index"]  # no temp files left
    assert prefix.with_name("bert_model.ckpt.index").stat().st_size > 3 * BLOCK_SIZE
    assert_identical(tensorflow_tensors(prefix), weights)
    assert_identical(read_bundle(prefix), weights)


def test_tensorflow_save_v2_bundle_reads_identically(tmp_path):
    weights = mixed_weights(seed=1)
    names = sorted(weights)
    prefix = tmp_path / "tf" / "bert_model.ckpt"
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(weights[n]) for n in names])
    assert_identical(read_bundle(prefix), tensorflow_tensors(prefix))
    ours = write_bundle(weights, tmp_path / "ours" / "bert_model.ckpt")
    data = "bert_model.ckpt.data-00000-of-00001"
    assert (ours.parent / data).read_bytes() == (prefix.parent / data).read_bytes()


def test_object_based_checkpoint_reads_identically(tmp_path):
    module = tf.Module()
    module.kernel = tf.Variable(np.arange(12, dtype=np.float32).reshape(3, 4))
    module.half = tf.Variable(np.ones(3, np.float16))
    module.layers = [tf.Variable(np.full((2,), i, np.int32)) for i in range(3)]
    prefix = tf.train.Checkpoint(model=module, step=tf.Variable(7, dtype=tf.int64)).write(
        str(tmp_path / "object" / "ckpt"))
    ours, theirs = read_bundle(prefix), tensorflow_tensors(prefix)
    assert_identical(ours, theirs)
    assert "model/kernel/.ATTRIBUTES/VARIABLE_VALUE" in ours
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in BundleReader(prefix).shapes()  # listed, not read


@pytest.mark.shared
def test_real_release_reads_identically(shared, tmp_path):
    archive = shared / "checkpoints" / "minilm-l3-h384-uncased.zip"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path)
    prefix = next(tmp_path.rglob("bert_model.ckpt.index")).with_suffix("")
    ours = read_bundle(prefix)
    assert len(ours) > 50
    assert_identical(ours, tensorflow_tensors(prefix))


def test_flipped_data_byte_names_the_tensor_and_file(tmp_path):
    prefix = write_bundle({"a": np.zeros(8, np.float32), "b": np.ones(8, np.float32)},
                          tmp_path / "ckpt")
    data = tmp_path / "ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[BundleReader(prefix).entries["b"].offset + 3] ^= 0x40
    data.write_bytes(bytes(raw))
    np.testing.assert_array_equal(BundleReader(prefix).read("a"), np.zeros(8, np.float32))
    with pytest.raises(BundleError, match=re.escape(f"{data}: checksum mismatch for tensor b")):
        read_bundle(prefix)


@pytest.mark.parametrize(("suffix", "error"), [(".data-00000-of-00001", "truncated: tensor a"),
                                               (".index", "bad table magic number")])
def test_a_truncated_file_is_named(tmp_path, suffix, error):
    prefix = write_bundle({"a": np.zeros(8, np.float32)}, tmp_path / "ckpt")
    damaged = tmp_path / f"ckpt{suffix}"
    damaged.write_bytes(damaged.read_bytes()[:-1])
    with pytest.raises(BundleError, match=re.escape(f"{damaged}: {error}")):
        read_bundle(prefix)


def test_every_truncation_and_flipped_byte_of_an_index_is_a_bundle_error_or_harmless(tmp_path):
    """No damage to the index escapes as an IndexError or struct.error, and none goes unseen
    unless it leaves the tensors intact (a padding byte, say)."""
    weights = {"a/kernel": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.array(3)}
    prefix = write_bundle(weights, tmp_path / "ckpt")
    index = tmp_path / "ckpt.index"
    good = index.read_bytes()
    damaged = [good[:n] for n in range(len(good))]
    damaged += [good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1:] for i in range(len(good))]
    for raw in damaged:
        index.write_bytes(raw)
        try:
            assert_identical(read_bundle(prefix), weights)
        except BundleError as err:
            assert str(index) in str(err)


def test_compressed_block_is_refused_by_name(tmp_path):
    prefix = write_bundle({"a": np.zeros(2, np.float32)}, tmp_path / "ckpt")
    index = tmp_path / "ckpt.index"
    raw = bytearray(index.read_bytes())
    data_block_end = raw[-48] - 5  # the one data block sits at 0, right before the metaindex
    raw[data_block_end] = 1  # snappy
    raw[data_block_end + 1:data_block_end + 5] = masked_crc(bytes(raw[:data_block_end + 1]))
    index.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=re.escape(f"{index}: data block at 0 is compressed")):
        read_bundle(prefix)


def masked_crc(data: bytes) -> bytes:
    import google_crc32c

    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF).to_bytes(4, "little")


def test_partitioned_variable_is_refused_by_name(tmp_path):
    value = np.arange(8, dtype=np.float32).reshape(4, 2)
    prefix = tmp_path / "ckpt"
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=["part", "part"],
                      shape_and_slices=["4 2 0,2:-", "4 2 2,2:-"],
                      tensors=[tf.constant(value[:2]), tf.constant(value[2:])])
    with pytest.raises(BundleError, match=r"partitioned \(sliced\) variables are not "
                                          r"supported: \['part'\]"):
        read_bundle(prefix)


def test_failed_write_leaves_the_old_checkpoint_alone(tmp_path):
    prefix = write_bundle({"a": np.zeros(2, np.float32)}, tmp_path / "ckpt")
    with pytest.raises(BundleError, match="tensor s: dtype <U1"):
        write_bundle({"a": np.ones(2, np.float32), "s": np.array(["x"])}, prefix)
    assert len(list(tmp_path.iterdir())) == 2
    assert_identical(read_bundle(prefix), {"a": np.zeros(2, np.float32)})
    write_bundle({"a": np.ones(2, np.float32)}, prefix)  # overwriting in place
    assert_identical(read_bundle(prefix), {"a": np.ones(2, np.float32)})


def test_read_checkpoint_works_where_tensorflow_cannot_be_imported(tmp_path):
    archive = write_release_zip(tmp_path / "release.zip", seed=4)
    child = textwrap.dedent("""
        import sys
        sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError
        import numpy as np
        from bert_core.checkpoint import read_checkpoint

        np.savez(sys.argv[2], **read_checkpoint(sys.argv[1]).weights)
    """)
    out = tmp_path / "weights.npz"
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run([sys.executable, "-c", child, str(archive), str(out)], check=False,
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "release")
    with np.load(out) as got:
        assert_identical(dict(got), tensorflow_tensors(tmp_path / "release" / "bert_model.ckpt"))
