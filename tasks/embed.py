"""Sentence vectors for a file of any size: a chunk at a time, from the registered classifier's
encoder or any pretrained checkpoint (bert_core/embedding.py does the model part).

    input (CSV, TSV, JSONL, Parquet)   ->   output Parquet: <id column> | embedding (float32 list)
                                            schema metadata: bertflow.layers, bertflow.pooling,
                                            bertflow.model, bertflow.max_seq_length

Columns, rejects (missing or empty text) and publishing (all at once, at the end) are those of
batch scoring (tasks/score.py).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from bert_core.embedding import Pooling, SentenceEncoder
from bert_core.features import encode_pairs
from bert_core.model import BertBackbone
from bert_core.tokenization import FullTokenizer
from data_contracts.specs.config import FileFormat
from data_contracts.specs.custom import file_format
from tasks.score import (
    Columns,
    ScoreSummary,
    TaskName,
    input_columns,
    progress_bar,
    rejects_path,
    split_rejects,
)
from tasks.streams import ParquetSink, RejectsSink, read_chunks, staged

DEFAULT_MAX_SEQ_LENGTH = 128  # extract_features.py's, for a checkpoint


class EmbedConfig(BaseModel):
    """What to embed, from which encoder, how, and where the vectors go."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: str
    output: str
    layers: tuple[int, ...] = Field((-1,), min_length=1, description="Encoder layers (-1: the "
                                    "last), concatenated in this order.")
    pooling: Pooling = Field("cls", description="cls: the [CLS] vector; mean: over real tokens.")
    model_uri: str | None = Field(None, description="A registered model's URI (default: the "
                                                    "champion of bertflow-<task>).")
    checkpoint: str | None = Field(None, description="A pretrained checkpoint instead.")
    do_lower_case: bool | None = Field(None, description="checkpoint: default as its name or "
                                                         "tokenizer_config.json says.")
    max_seq_length: int | None = Field(None, ge=3, le=512, description="Default: the model's; "
                                       "a checkpoint: 128.")
    task: TaskName = "mrpc"
    text_a: str | None = None
    text_b: str | None = Field(None, description="A second text: pairs are packed as BERT reads "
                                                 "them ([CLS] a [SEP] b [SEP]).")
    id: str | None = None
    format: FileFormat = "auto"
    home: str = ".bertflow"
    tracking_uri: str | None = None
    chunk_rows: int = Field(8192, ge=1)


@dataclass
class Encoder:
    """A backbone with the tokenizer and length it reads, and what it is (for the metadata)."""

    backbone: BertBackbone
    tokenizer: FullTokenizer
    max_seq_length: int
    name: str


def registered_encoder(cfg: EmbedConfig) -> Encoder:
    """The encoder of the registered classifier (the champion of cfg.task's model by default)."""
    import mlflow

    from tasks.config import RegistryConfig
    from tasks.mlflow_store import tracking_uri
    from tasks.score import pinned
    from tasks.serving import for_task_name, load_model

    registry = for_task_name(RegistryConfig(tracking_uri=cfg.tracking_uri), cfg.task)
    uri = tracking_uri(registry, Path(cfg.home))
    model_uri = cfg.model_uri
    if model_uri is None or model_uri.startswith("models:/"):
        model_uri = pinned(cfg.model_uri, registry.model_name,
                           mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri))[0]
    inner = load_model(model_uri, Path(cfg.home), registry).unwrap_python_model()
    return Encoder(inner.model.backbone, inner.tokenizer,
                   cfg.max_seq_length or inner.max_seq_length, model_uri)


def checkpoint_encoder(cfg: EmbedConfig) -> Encoder:
    """A pretrained checkpoint's encoder, its vocab, its case (bert_core/checkpoint.py)."""
    from bert_core.checkpoint import load_pretrained, read_checkpoint
    from bert_core.embedding import checkpoint_lower_case, checkpoint_vocab

    ckpt = read_checkpoint(cfg.checkpoint)
    backbone = BertBackbone(ckpt.config, name="bert")
    load_pretrained(backbone, ckpt)
    lower = checkpoint_lower_case(cfg.checkpoint) if cfg.do_lower_case is None \
        else cfg.do_lower_case
    with tempfile.TemporaryDirectory(prefix="bertflow-vocab-") as tmp:
        tokenizer = FullTokenizer(checkpoint_vocab(cfg.checkpoint, Path(tmp)), lower)
    return Encoder(backbone, tokenizer, cfg.max_seq_length or DEFAULT_MAX_SEQ_LENGTH,
                   cfg.checkpoint)


def vectors_table(ids: np.ndarray, id_name: str, vectors: np.ndarray) -> pa.Table:
    """`id_name` and `embedding`, a fixed-size list of float32 per row.

    >>> vectors_table(np.array(["a"]), "id", np.ones((1, 2), np.float32)).schema.field(1).type
    FixedSizeListType(fixed_size_list<item: float>[2])
    """
    flat = pa.array(np.ascontiguousarray(vectors, np.float32).ravel(), pa.float32())
    return pa.table({id_name: pa.array(ids.tolist()),
                     "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})


def embed_file(encoder: Encoder, cfg: EmbedConfig, progress=None) -> ScoreSummary:
    """Sentence vectors of cfg.input's texts into cfg.output (see the module docstring)."""
    source, out = Path(cfg.input), Path(cfg.output)
    columns: Columns = input_columns(cfg.task, cfg.text_a, cfg.text_b, cfg.id,
                                     pair=cfg.text_b is not None)
    sentences = SentenceEncoder(encoder.backbone, cfg.layers, cfg.pooling)
    metadata = {"bertflow.layers": ",".join(map(str, cfg.layers)),
                "bertflow.pooling": cfg.pooling, "bertflow.model": encoder.name,
                "bertflow.max_seq_length": str(encoder.max_seq_length)}
    optional = () if columns.id is None or columns.id_required else (columns.id,)
    required = (*columns.texts, *((columns.id,) if columns.id_required else ()))
    start, rejected, id_name = time.monotonic(), 0, "row"
    with staged(out, rejects_path(out)) as (out_tmp, rejects_tmp):
        sink, rejects_sink = ParquetSink(out_tmp, metadata), RejectsSink(rejects_tmp)
        for chunk in read_chunks(source, file_format(str(source), cfg.format), required,
                                 cfg.chunk_rows, optional):
            good, rejects = split_rejects(chunk, columns)
            id_name = good.columns[0]
            if len(good):
                features = encode_pairs(encoder.tokenizer, good[columns.text_a].tolist(),
                                        None if columns.text_b is None else
                                        good[columns.text_b].tolist(), encoder.max_seq_length)
                sink.write_table(vectors_table(good.iloc[:, 0].to_numpy(), id_name,
                                               sentences.encode(features)))
            rejects_sink.write(rejects)
            rejected += len(rejects)
            if progress:
                progress(chunk, sink.rows + rejected)
        sink.close(vectors_table(np.array([], object), id_name,
                                 np.zeros((0, sentences.width), np.float32)))
        rejects_sink.close()
    return ScoreSummary(input=str(source), output=str(out), rejects=str(rejects_path(out)),
                        model_uri=encoder.name, model_version=encoder.name,
                        rows=sink.rows + rejected, scored=sink.rows, rejected=rejected,
                        seconds=time.monotonic() - start, verb="embedded")


def embed(cfg: EmbedConfig) -> ScoreSummary:
    """Load the encoder cfg names (a checkpoint, else a registered model) and embed the file,
    a progress bar on stderr."""
    encoder = checkpoint_encoder(cfg) if cfg.checkpoint else registered_encoder(cfg)
    update, close = progress_bar(f"embed {Path(cfg.input).name}",
                                 file_format(cfg.input, cfg.format))
    try:
        return embed_file(encoder, cfg, update)
    finally:
        close()
