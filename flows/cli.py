"""The `bertflow` command. Only this module parses argv and sets environment variables; everything
below it takes typed configuration."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Fine-tune and ship a BERT sentence-pair classifier (GLUE MRPC).")

Home = Annotated[Path, typer.Option(help="All state: caches, shards, models, Prefect results, "
                                         "MLflow store.")]
DEFAULT_HOME = Path(".bertflow")


# TensorFlow reads these when it is first imported, so they are set before any task module loads.
# A user's own value wins. prefect.yaml gives its deployments the same (job_variables.env).
TENSORFLOW_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # TensorFlow's pooled (BFC) CPU allocator: the default hands every large temporary to malloc,
    # which maps it anew each step; page faults took 19% of a training profile. Pooled, MiniLM-L3
    # padded (bench/train.py): peak RSS 1.76x -> 1.44x of Hugging Face's, and 4-33% more
    # examples/s on the two machines measured.
    "TF_CPU_ALLOCATOR_USE_BFC": "true",
}


def _use_home(home: Path) -> Path:
    """Point Prefect's local state at the home, keep every tool's telemetry off, and set
    TensorFlow's environment."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    for name, value in (("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
                        # a busy 2-core machine can take longer than Prefect's 20 s to start
                        # the temporary API server a run without PREFECT_API_URL uses
                        ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"),
                        ("MLFLOW_DISABLE_TELEMETRY", "true"), ("GX_ANALYTICS_ENABLED", "false"),
                        *TENSORFLOW_ENV.items()):
        os.environ.setdefault(name, value)
    return home


@contextmanager
def _prefect_api_starting() -> Iterator[None]:
    """Without PREFECT_API_URL, Prefect starts a temporary API server when the flow first calls
    it (~8 s here). Start it now instead, beside the imports of the flow's modules (Prefect's
    tasks, MLflow, GX), and wait for it on leaving: a cached rerun is mostly these two. If the
    early start fails, the flow's own call starts the server again and reports the error."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer  # what get_client() starts

    thread = threading.Thread(target=SubprocessASGIServer().start, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False):
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def load_config(config: Path | None, home: Path, overrides: dict[str, dict]):
    """PipelineConfig from an optional JSON/YAML file, then the flags that were given."""
    import yaml

    from tasks.config import PipelineConfig

    from pydantic import ValidationError

    values = yaml.safe_load(config.read_text()) or {} if config else {}
    values["home"] = str(home)
    for section, fields in overrides.items():
        given = {k: v for k, v in fields.items() if v is not None}
        if given:
            values[section] = {**values.get(section, {}), **given}
    try:
        return PipelineConfig.model_validate(values)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise typer.BadParameter(f"{config or 'flags'}: {problems}") from None


Config = Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False,
                                                help="YAML/JSON PipelineConfig.")]
MrpcSource = Annotated[Optional[str], typer.Option(help="GLUE TSVs or MSR files: folder, file:// "
                                                       "or http(s) base.")]
Mirror = Annotated[Optional[str], typer.Option(help="Base URL/folder with the default files "
                                                   "(pins apply).")]
Checkpoint = Annotated[Optional[str], typer.Option(help="Google zip/folder or HF folder: path "
                                                       "or URL.")]
CheckpointSha = Annotated[Optional[str], typer.Option(help="sha256 pin for --checkpoint.")]
NoCheckpoint = Annotated[bool, typer.Option("--no-checkpoint", help="Random init (the checkpoint "
                                            "still gives vocab and config).")]
Architecture = Annotated[Optional[str], typer.Option(help="checkpoint | bert-tiny")]
Epochs = Annotated[Optional[float], typer.Option()]
BatchSize = Annotated[Optional[int], typer.Option()]
MaxSeqLength = Annotated[Optional[int], typer.Option()]
TrackingUri = Annotated[Optional[str], typer.Option(help="MLflow tracking URI (default: SQLite "
                                                        "under --home).")]
AsJson = Annotated[bool, typer.Option("--json", help="End with one JSON line: run id, task "
                                      "states, metrics, model version.")]


def _overrides(mrpc_source, mirror, checkpoint, checkpoint_sha256, no_checkpoint, architecture,
               epochs, batch_size, max_seq_length, tracking_uri, **train) -> dict[str, dict]:
    """The flags shared by `run` and `sweep`, as PipelineConfig sections."""
    return {"data": {"mrpc_source": mrpc_source, "mirror": mirror, "checkpoint": checkpoint,
                     "checkpoint_sha256": checkpoint_sha256},
            "model": {"max_seq_length": max_seq_length},
            "train": {"epochs": epochs, "batch_size": batch_size, "architecture": architecture,
                      "init_from_checkpoint": False if no_checkpoint else None, **train},
            "registry": {"tracking_uri": tracking_uri}}


@app.command()
def run(home: Home = DEFAULT_HOME, config: Config = None, mrpc_source: MrpcSource = None,
        mirror: Mirror = None, checkpoint: Checkpoint = None,
        checkpoint_sha256: CheckpointSha = None, no_checkpoint: NoCheckpoint = False,
        architecture: Architecture = None,
        seed: Annotated[Optional[int], typer.Option()] = None,
        learning_rate: Annotated[Optional[float], typer.Option()] = None,
        epochs: Epochs = None, batch_size: BatchSize = None, max_seq_length: MaxSeqLength = None,
        tracking_uri: TrackingUri = None, as_json: AsJson = False):
    """Run the fine-tune flow: download -> validate -> tokenize -> train -> evaluate -> register."""
    home = _use_home(home)
    cfg = load_config(config, home, _overrides(
        mrpc_source, mirror, checkpoint, checkpoint_sha256, no_checkpoint, architecture, epochs,
        batch_size, max_seq_length, tracking_uri, seed=seed, learning_rate=learning_rate))
    with _prefect_api_starting():
        from flows.finetune import finetune_mrpc
        from flows.summary import summarize

    _finish(summarize(finetune_mrpc(cfg, return_state=True), cfg), as_json)


@app.command()
def sweep(home: Home = DEFAULT_HOME, config: Config = None, mrpc_source: MrpcSource = None,
          mirror: Mirror = None, checkpoint: Checkpoint = None,
          checkpoint_sha256: CheckpointSha = None, no_checkpoint: NoCheckpoint = False,
          architecture: Architecture = None,
          seed: Annotated[Optional[list[int]], typer.Option(help="Repeat for several.")] = None,
          learning_rate: Annotated[Optional[list[float]],
                                   typer.Option(help="Repeat for several.")] = None,
          epochs: Epochs = None, batch_size: BatchSize = None,
          max_seq_length: MaxSeqLength = None, tracking_uri: TrackingUri = None,
          as_json: AsJson = False):
    """Fine-tune every learning rate with every seed under one MLflow parent run; report mean +/-
    sd per learning rate; register the best trial."""
    from tasks.config import SweepConfig

    home = _use_home(home)
    cfg = load_config(config, home, _overrides(
        mrpc_source, mirror, checkpoint, checkpoint_sha256, no_checkpoint, architecture, epochs,
        batch_size, max_seq_length, tracking_uri))
    grid = SweepConfig.model_validate({k: v for k, v in (("learning_rates", learning_rate),
                                                         ("seeds", seed)) if v})
    with _prefect_api_starting():
        from flows.summary import summarize_sweep
        from flows.sweep import sweep_mrpc

    _finish(summarize_sweep(sweep_mrpc(cfg, grid, return_state=True), cfg), as_json)


def _finish(summary: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, default=str))
    else:
        from flows.summary import describe

        typer.echo(describe(summary))
    if summary["state"] != "Completed":
        raise typer.Exit(1)


@app.command()
def validate(mrpc_source: MrpcSource = None, mirror: Mirror = None, config: Config = None,
             home: Home = DEFAULT_HOME):
    """Download and validate MRPC only: check a new data drop before a scheduled run."""
    home = _use_home(home)
    cfg = load_config(config, home, {"data": {"mrpc_source": mrpc_source, "mirror": mirror}})
    from flows.data import validate_mrpc

    state = validate_mrpc(cfg.data, str(home), return_state=True)
    if not state.is_completed():
        typer.echo(f"invalid: {state.result(raise_on_failure=False)}", err=True)
        raise typer.Exit(1)
    typer.echo(f"valid: {state.result()}")


@app.command()
def predict(
    pairs: Annotated[Optional[Path], typer.Argument(help="File of tab-separated sentence pairs "
                                                         "(default: stdin).")] = None,
    home: Home = DEFAULT_HOME,
    model_uri: Annotated[Optional[str], typer.Option(help="Default: the champion in --home.")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option()] = None,
):
    """Classify sentence pairs: one line per pair, `label<TAB>paraphrase probability`."""
    home = _use_home(home)
    from tasks.config import RegistryConfig
    from tasks.register import load_model, predict_pairs

    lines = (pairs.read_text(encoding="utf-8") if pairs else sys.stdin.read()).splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise typer.BadParameter(f"line {number}: expected sentence1<TAB>sentence2, "
                                     f"got {len(fields)} field(s)")
        rows.append((fields[0], fields[1]))
    model = load_model(model_uri, home, RegistryConfig(tracking_uri=tracking_uri))
    for probability in predict_pairs(model, rows):
        typer.echo(f"{int(probability >= 0.5)}\t{probability:.6f}")


@app.command()
def ui(home: Home = DEFAULT_HOME,
       prefect_port: Annotated[int, typer.Option()] = 4200,
       mlflow_port: Annotated[int, typer.Option()] = 5000):
    """Start the Prefect server and the MLflow UI on 127.0.0.1 for --home; Ctrl-C stops both."""
    home = _use_home(home)
    from flows.servers import serve_uis

    serve_uis(home, prefect_port, mlflow_port, echo=typer.echo)


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


if __name__ == "__main__":
    app()
