"""The `bertflow` command. Only this module parses argv and sets environment variables; everything
below it takes typed configuration."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from flows.automations import notify
from flows.options import (DEFAULT_HOME, Architecture, AsJson, BatchSize, Checkpoint,
                           CheckpointSha, Config, ConfigHome, DataSource, DevFile, Drops, Epochs,
                           EvalSet, Home, LabelColumn, LearningRate, MaxSeqLength, MinDelta,
                           Mirror, NoCheckpoint,
                           Regression, Seed, TaskName, TestFile, TextA, TextB, TrackingUri,
                           TrainFile, load_config, overrides, task_overrides, use_home)


class _Commands(TyperGroup):
    """Every command: an anticipated failure (a broken file, a dead URL, a missing model) ends
    in one message naming it and what to do, and exit status 1; its traceback only with
    --verbose. Anything else propagates with its traceback."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except Exception as err:  # noqa: BLE001 - explain() picks the anticipated ones
            from flows.errors import explain

            message = explain(err)
            if message is None:
                raise
            fail(message, err, verbose=ctx.params.get("verbose", False))


def fail(message: str, err: BaseException | None = None, verbose: bool = False):
    """Print `message` on stderr (after the traceback of `err` with --verbose), exit 1."""
    if verbose and err is not None:
        import traceback

        traceback.print_exception(err)
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


app = typer.Typer(cls=_Commands, no_args_is_help=True, add_completion=False,
                  help="Fine-tune and ship a BERT classifier: GLUE's tasks or your own files.")

@contextmanager
def _prefect_api_starting() -> Iterator[None]:
    """Without PREFECT_API_URL, the flow runs against a temporary Prefect API server of this
    process's own (flows/prefect_api.py), started now, beside the imports of the flow's modules
    (Prefect's tasks, MLflow, GX), and waited for on leaving: a cached rerun is mostly these two.
    It stops when this process exits, dies with it even on SIGKILL, and a terminal's Ctrl-C
    reaches this process only, so the interrupted flow run is recorded (Crashed) before the
    server stops. SIGTERM takes Ctrl-C's path."""
    import signal

    from flows.prefect_api import TemporaryAPI

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)  # Prefect's own handler takes over inside a flow
    api = None if os.environ.get("PREFECT_API_URL") else TemporaryAPI(os.environ).start()
    from prefect.settings import PREFECT_API_URL

    if api and PREFECT_API_URL.value():  # a Prefect profile or prefect.toml names a server
        api.stop()
        api = None
    yield
    if api:
        api.wait_until_up()
        os.environ["PREFECT_API_URL"] = api.url
        os.environ.setdefault("PREFECT_UI_URL", "")  # it serves no UI: no "View at" links to it
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


@app.callback()
def main(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Debug logging, tracebacks and TensorFlow's start-up lines on "
                                "the terminal.")] = False):
    from flows.console import configure

    configure(verbose)


@app.command()
def run(home: ConfigHome = None, config: Config = None, task: TaskName = None,
        train: TrainFile = None, dev: DevFile = None, test: TestFile = None, text_a: TextA = None,
        text_b: TextB = None, label: LabelColumn = None, regression: Regression = None,
        source: DataSource = None, mirror: Mirror = None, checkpoint: Checkpoint = None,
        checkpoint_sha256: CheckpointSha = None, no_checkpoint: NoCheckpoint = False,
        architecture: Architecture = None,
        seed: Seed = None, learning_rate: LearningRate = None,
        epochs: Epochs = None, batch_size: BatchSize = None, max_seq_length: MaxSeqLength = None,
        tracking_uri: TrackingUri = None, drops: Drops = None, eval_set: EvalSet = None,
        min_delta: MinDelta = None, as_json: AsJson = False,
        rerun: Annotated[Optional[str], typer.Option(
            help="Run this stage and every one after it again, whatever the cache holds: "
                 "download, validate, tokenize, train, evaluate or register.")] = None):
    """Run the fine-tune flow: download -> validate -> tokenize -> train -> evaluate -> register
    (on the newest drop with --drops; the champion moves only to a significantly better model)."""
    _check_stages([rerun] if rerun else [], "--rerun")
    cfg = load_config(config, home, overrides(
        source, mirror, checkpoint, checkpoint_sha256, no_checkpoint, architecture, epochs,
        batch_size, max_seq_length, tracking_uri, drops=drops, eval_set=eval_set,
        min_delta=min_delta, seed=seed, learning_rate=learning_rate,
        task=dict(task=task, train=train, dev=dev, test=test, text_a=text_a, text_b=text_b,
                  label=label, regression=regression)))
    home = use_home(Path(cfg.home))
    with _prefect_api_starting():
        from flows.finetune import finetune
        from flows.summary import summarize

    _finish(summarize(finetune(cfg, rerun=rerun, return_state=True), cfg), as_json)


@app.command()
def sweep(home: ConfigHome = None, config: Config = None, task: TaskName = None,
          source: DataSource = None, mirror: Mirror = None, checkpoint: Checkpoint = None,
          checkpoint_sha256: CheckpointSha = None, no_checkpoint: NoCheckpoint = False,
          architecture: Architecture = None,
          seed: Annotated[Optional[list[int]], typer.Option(
              help="A seed of the grid; repeat for several (default 1, 2, 3).")] = None,
          learning_rate: Annotated[Optional[list[float]], typer.Option(
              help="A learning rate of the grid; repeat for several (default 2e-5, 3e-5, "
                   "5e-5).")] = None,
          epochs: Epochs = None, batch_size: BatchSize = None,
          max_seq_length: MaxSeqLength = None, tracking_uri: TrackingUri = None,
          as_json: AsJson = False):
    """Fine-tune every learning rate with every seed under one MLflow parent run; report mean +/-
    sd per learning rate; register the best trial."""
    cfg = load_config(config, home, overrides(
        source, mirror, checkpoint, checkpoint_sha256, no_checkpoint, architecture, epochs,
        batch_size, max_seq_length, tracking_uri, task=dict(task=task)))
    home = use_home(Path(cfg.home))
    from tasks.config import SweepConfig

    grid = SweepConfig.model_validate({k: v for k, v in (("learning_rates", learning_rate),
                                                         ("seeds", seed)) if v})
    with _prefect_api_starting():
        from flows.summary import summarize_sweep
        from flows.sweep import sweep as sweep_flow

    _finish(summarize_sweep(sweep_flow(cfg, grid, return_state=True), cfg), as_json)


def _finish(summary: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, default=str))
    else:
        from flows.summary import describe

        typer.echo(describe(summary))
    if summary["state"] != "Completed":
        raise typer.Exit(1)


def _check_stages(stages: list[str], flag: str) -> None:
    from tasks.config import STAGES  # no Prefect: it is imported once PREFECT_HOME is set

    for stage in stages:
        if stage not in STAGES:
            raise typer.BadParameter(f"unknown stage {stage!r}: one of {', '.join(STAGES)}",
                                     param_hint=flag)


cache_app = typer.Typer(no_args_is_help=True, help="The recorded results that make reruns fast.")
app.add_typer(cache_app, name="cache")


@cache_app.command("clear")
def cache_clear(home: Home = DEFAULT_HOME,
                stage: Annotated[Optional[list[str]], typer.Option(
                    help="Only this stage's results (repeat for several); default: all.")] = None):
    """Drop recorded task results, so the next run runs those stages again. Models, shards and
    reports on disk stay: a stage whose intact output folder exists reuses it."""
    use_home(home)
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    from tasks.caching import clear
    from tasks.config import STAGES

    _check_stages(stage or [], "--stage")
    storage = Path(PREFECT_LOCAL_STORAGE_PATH.value())
    dropped = clear(storage, stage or STAGES)
    typer.echo(f"dropped {dropped} recorded result(s) of {', '.join(stage or STAGES)} "
               f"from {storage}")


@app.command()
def validate(task: TaskName = None, train: TrainFile = None, dev: DevFile = None,
             test: TestFile = None, text_a: TextA = None, text_b: TextB = None,
             label: LabelColumn = None, regression: Regression = None,
             source: DataSource = None, mirror: Mirror = None, config: Config = None,
             home: ConfigHome = None):
    """Download and validate a task's files only: check a new data drop before a scheduled run."""
    cfg = load_config(config, home, {
        **task_overrides(task, train, dev, test, text_a, text_b, label, regression),
        "data": {"source": source, "mirror": mirror}})
    home = use_home(Path(cfg.home))
    with _prefect_api_starting():
        from flows.data import validate_data
        from flows.summary import error_message

    state = validate_data(cfg.data, str(home), cfg.task, return_state=True)
    if not state.is_completed():
        typer.echo(f"invalid: {error_message(state.result(raise_on_failure=False), cfg)}",
                   err=True)
        raise typer.Exit(1)
    typer.echo(f"valid: {state.result()}")


@app.command()
def predict(
    examples: Annotated[Optional[Path], typer.Argument(
        help="File of one example per line: text_a, or text_a<TAB>text_b for a sentence-pair "
             "model (default: stdin).")] = None,
    home: Home = DEFAULT_HOME,
    model_uri: Annotated[Optional[str], typer.Option(
        help="An MLflow model URI, e.g. models:/bertflow-rte/2. Default: the champion of "
             "--task's model in --home's store.")] = None,
    task: Annotated[str, typer.Option(
        help="The task whose champion answers: bertflow-<task>.")] = "mrpc",
    tracking_uri: TrackingUri = None,
):
    """Classify text: one line per example, `label<TAB>probability of that label` (a regression
    model: `score`)."""
    home = use_home(home)
    from data_contracts.specs import BUILT_IN
    from tasks.config import RegistryConfig
    from tasks.serving import for_task_name, predict_texts, served_inputs

    if task not in (*BUILT_IN, "custom"):
        raise typer.BadParameter(f"{task!r}: one of {', '.join(BUILT_IN)}, custom",
                                 param_hint="--task")
    lines = (examples.read_text(encoding="utf-8") if examples else sys.stdin.read()).splitlines()
    cfg = for_task_name(RegistryConfig(tracking_uri=tracking_uri), task)
    model = _load_model(model_uri, home, cfg)
    columns = served_inputs(model)
    rows = [tuple(line.split("\t")) for line in lines]
    for number, fields in enumerate(rows, start=1):
        if len(fields) != len(columns):
            kind = "sentence-pair" if len(columns) == 2 else "single-sentence"
            raise typer.BadParameter(f"line {number}: the {kind} model expects "
                                     f"{'<TAB>'.join(columns)}, got {len(fields)} field(s)")
    answers = predict_texts(model, rows)
    for answer in answers.to_dict("records"):
        typer.echo(f"{answer['score']:.6f}" if "score" in answer
                   else f"{answer['label']}\t{answer['probability']:.6f}")


def _load_model(model_uri: str | None, home: Path, cfg):
    """The model to serve; a missing one fails naming what the store holds."""
    from mlflow.exceptions import MlflowException

    from flows.errors import NoModelError, no_model
    from tasks.mlflow_store import tracking_uri
    from tasks.serving import load_model

    try:
        return load_model(model_uri, home, cfg)
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise NoModelError(no_model(model_uri, err, tracking_uri(cfg, home),
                                    cfg.model_name)) from err


InputFile = Annotated[Path, typer.Option("--input", help="CSV, TSV, JSON Lines or Parquet file "
                                                           "(format by its suffix).")]
OutputFile = Annotated[Path, typer.Option("--output", help="The Parquet file to write (replaced "
                                                             "only once complete).")]
ModelUri = Annotated[Optional[str], typer.Option(
    help="An MLflow model URI, e.g. models:/bertflow-rte/2. Default: the champion of --task's "
         "model in --home's store.")]
ScoreTask = Annotated[str, typer.Option(
    "--task", help="The task whose column layout (its GLUE test file's) and champion are used; "
                   "custom: your own columns (--text-a, --text-b, --id).")]
IdColumn = Annotated[Optional[str], typer.Option(
    "--id", help="A column of ids to copy to the output (default: `index` where the file has "
                 "one, else the row number).")]


def _score_config(**values):
    """ScoreConfig from the flags given; a bad value is a usage error naming the flag."""
    from pydantic import ValidationError

    from tasks.score import ScoreConfig

    try:
        return ScoreConfig.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as err:
        problems = "; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}"
                             for e in err.errors())
        raise typer.BadParameter(problems) from None


@app.command()
def score(input: InputFile, output: OutputFile, model_uri: ModelUri = None,
          task: ScoreTask = "mrpc", text_a: TextA = None, text_b: TextB = None,
          id: IdColumn = None, home: Home = DEFAULT_HOME, tracking_uri: TrackingUri = None,
          chunk_rows: Annotated[int, typer.Option(
              min=1, help="Rows read, scored and written at a time (memory grows with it).")]
          = 8192, as_json: AsJson = False):
    """Score a file of any size with the registered classifier: one Parquet row of answers per
    input row (label, probability_<label>..., or score; model_version); rows with no text go to
    <output stem>.rejects.csv."""
    home = use_home(home)
    cfg = _score_config(input=str(input.resolve()), output=str(output.resolve()), task=task,
                        model_uri=model_uri, text_a=text_a, text_b=text_b, id=id,
                        home=str(home), tracking_uri=tracking_uri, chunk_rows=chunk_rows)
    with _prefect_api_starting():
        from flows.score import score_file

    state = score_file(cfg, return_state=True)
    summary = state.result(raise_on_failure=False)
    if isinstance(summary, BaseException):
        raise summary
    if not state.is_completed():
        fail(f"the score flow ended {state.name}: {state.message}")
    typer.echo(summary.model_dump_json() if as_json else summary.line())


@app.command()
def embed(input: InputFile, output: OutputFile,
          layers: Annotated[str, typer.Option(
              help="Encoder layers, comma-separated (-1: the last), concatenated in this "
                   "order.")] = "-1",
          pooling: Annotated[str, typer.Option(
              help="cls: the [CLS] position's vector; mean: the mean over real tokens.")]
          = "cls",
          model_uri: ModelUri = None,
          checkpoint: Annotated[Optional[str], typer.Option(
              help="A pretrained checkpoint (Google zip/folder, Hugging Face folder) instead "
                   "of a registered model.")] = None,
          cased: Annotated[Optional[bool], typer.Option(
              "--cased/--uncased", help="--checkpoint: the vocab's case (default: as the "
                                        "checkpoint says).")] = None,
          max_seq_length: Annotated[Optional[int], typer.Option(
              help="Tokens per text after packing (default: the model's; a checkpoint: "
                   "128).")] = None,
          task: ScoreTask = "mrpc", text_a: TextA = None, text_b: TextB = None,
          id: IdColumn = None, home: Home = DEFAULT_HOME, tracking_uri: TrackingUri = None,
          chunk_rows: Annotated[int, typer.Option(min=1, help="Rows read and written at a "
                                                            "time.")] = 8192,
          as_json: AsJson = False):
    """Sentence vectors, as google-research/bert's extract_features.py reads them: the chosen
    encoder layers pooled per text, in a Parquet column `embedding`."""
    if model_uri and checkpoint:
        raise typer.BadParameter("give --model-uri or --checkpoint, not both")
    try:
        numbers = [int(x) for x in layers.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{layers!r}: comma-separated integers, e.g. -1,-2",
                                 param_hint="--layers") from None
    home = use_home(home)
    from pydantic import ValidationError

    from tasks.embed import EmbedConfig
    from tasks.embed import embed as embed_file

    given = {"input": str(input.resolve()), "output": str(output.resolve()), "layers": numbers,
             "pooling": pooling, "model_uri": model_uri, "checkpoint": checkpoint,
             "do_lower_case": None if cased is None else not cased,
             "max_seq_length": max_seq_length, "task": task, "text_a": text_a,
             "text_b": text_b, "id": id, "home": str(home), "tracking_uri": tracking_uri,
             "chunk_rows": chunk_rows}
    try:
        cfg = EmbedConfig.model_validate({k: v for k, v in given.items() if v is not None})
        summary = embed_file(cfg)
    except ValidationError as err:
        raise typer.BadParameter("; ".join(f"--{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                           for e in err.errors())) from None
    except ValueError as err:
        if type(err) is not ValueError:  # a broken file or checkpoint: explained as such
            raise
        raise typer.BadParameter(str(err)) from None
    typer.echo(summary.model_dump_json() if as_json else summary.line())


@app.command()
def ui(home: Home = DEFAULT_HOME,
       prefect_port: Annotated[int, typer.Option(help="Port of the Prefect server and UI.")] = 4200,
       mlflow_port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000):
    """Start the Prefect server and the MLflow UI on 127.0.0.1 for --home; Ctrl-C stops both."""
    home = use_home(home)
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
    max_seq_length: Annotated[int, typer.Option(min=3, help="Pad (or truncate) to this many "
                                                           "tokens.")] = 128,
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


app.command("notify")(notify)

if __name__ == "__main__":
    app()
