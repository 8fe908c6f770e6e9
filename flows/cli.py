"""The `bertflow` command. Only this module parses argv; everything below takes typed arguments."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Fine-tune and ship a BERT sentence-pair classifier (GLUE MRPC).")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False):
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@app.command()
def checkpoint(
    source: Annotated[Path, typer.Argument(help="Google release (.zip, directory, or "
                                                "bert_model.ckpt prefix) or Hugging Face directory.")],
    num_labels: Annotated[int, typer.Option(help="Classifier outputs.")] = 2,
):
    """Read a pretrained checkpoint and show which classifier weights it initialises."""
    from bert_core.checkpoint import CheckpointError, load_pretrained, read_checkpoint
    from bert_core.model import BertClassifier

    try:
        ckpt = read_checkpoint(source)
        model = BertClassifier.from_bert_config(ckpt.config, num_labels=num_labels)
        report = load_pretrained(model, ckpt)
    except (CheckpointError, OSError) as err:
        raise typer.BadParameter(str(err), param_hint="SOURCE") from err
    typer.echo(f"format: {ckpt.format}\nconfig: {ckpt.config}")
    typer.echo(report.format())
    typer.echo(f"{len(report.from_checkpoint)} weights from checkpoint, "
               f"{len(report.fresh)} fresh: {', '.join(report.fresh) or 'none'}")


@app.command()
def encode(
    vocab: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="WordPiece vocab.txt.")],
    text_a: Annotated[str, typer.Argument(help="First sentence.")],
    text_b: Annotated[Optional[str], typer.Argument(help="Second sentence (optional).")] = None,
    max_seq_length: Annotated[int, typer.Option(min=3)] = 128,
    cased: Annotated[bool, typer.Option(help="Keep case and accents (cased vocab).")] = False,
):
    """Tokenize and pack one pair exactly as the pipeline feeds it to BERT."""
    from bert_core.features import encode_pairs
    from bert_core.tokenization import FullTokenizer

    tokenizer = FullTokenizer(vocab, do_lower_case=not cased)
    features = encode_pairs(tokenizer, [text_a], None if text_b is None else [text_b],
                            max_seq_length)
    n = int(features.input_mask[0].sum())
    ids = features.input_ids[0, :n].tolist()
    typer.echo("tokens:      " + " ".join(tokenizer.convert_ids_to_tokens(ids)))
    typer.echo("input_ids:   " + " ".join(map(str, ids)))
    typer.echo("segment_ids: " + " ".join(map(str, features.segment_ids[0, :n].tolist())))
    typer.echo(f"({n} real tokens, zero-padded to {max_seq_length})")
