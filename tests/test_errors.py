"""What a person sees when `bertflow` fails: one message naming their file, URL or store and what
to do, exit status 1 (2 for a usage error), no traceback unless --verbose, and none of
TensorFlow's start-up lines. Each case runs the installed console script on a broken input."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import pytest

from data_contracts.specs.msr import build_glue_mrpc
from tests.fixtures import free_port, run_bertflow, write_msr_files, write_release_zip

BOUNDS_YAML = "data:\n  row_bounds: {train: [1, 100], dev: [1, 100], test: [1, 100]}\n"
TINY_RUN = ["--max-seq-length", "32", "--epochs", "1", "--batch-size", "4"]
# What a runtime-only install (`make run`: pip install -e .) lacks: the test extras.
TEST_EXTRAS = ("pytest", "_pytest", "jax", "jaxlib", "torch", "transformers", "tokenizers",
               "prefect_dask", "distributed", "dask")
TENSORFLOW_NOISE = ("I0000", "E0000", "W0000", "oneDNN", "cuInit", "absl::InitializeLog")


def _terminal(done) -> str:
    return done.stdout + done.stderr


def _bounds(tmp_path: Path) -> Path:
    config = tmp_path / "bounds.yaml"
    config.write_text(BOUNDS_YAML)
    return config


def _break_label(path: Path, line: int) -> None:
    """Quality '2' (outside {0, 1}) on the file's `line` (1-based; line 1 is the header)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[line - 1] = "2" + lines[line - 1][1:]
    path.write_text("".join(lines), encoding="utf-8")


def _prefect_log(home: Path) -> str:
    """Every log message of the flow and task runs, as Prefect's database holds them."""
    with sqlite3.connect(home / "prefect" / "prefect.db") as db:
        return "\n".join(row[0] for row in db.execute("SELECT message FROM log"))


def test_a_broken_glue_file_is_named_as_the_user_gave_it_and_its_traceback_goes_to_prefect(
        tmp_path):
    msr = write_msr_files(tmp_path / "msr")
    build_glue_mrpc(msr / "msr_paraphrase_train.txt", msr / "msr_paraphrase_test.txt",
                    msr / "dev_ids.tsv", tmp_path / "glue")
    _break_label(tmp_path / "glue" / "train.tsv", 4)

    done = run_bertflow(["validate", "--mrpc-source", "glue", "--config", str(_bounds(tmp_path))],
                        tmp_path / "home")  # run beside `glue`: the relative path is the user's

    assert done.returncode == 1
    message = done.stderr[done.stderr.index("invalid: "):]
    assert message.startswith("invalid: glue/train.tsv: 1 of ")
    assert "expect_column_values_to_be_in_set on Quality (Quality is 0 or 1)" in message
    assert "row 3 (line 4): '2'" in message and "fix the file" in message
    assert "Traceback" not in _terminal(done)
    assert str(tmp_path / "home") not in message  # not the working copy under home/data/mrpc
    assert "Traceback (most recent call last)" in _prefect_log(tmp_path / "home")


def test_with_verbose_the_traceback_reaches_the_terminal_and_msr_files_are_named(tmp_path):
    msr = write_msr_files(tmp_path / "msr")
    _break_label(msr / "msr_paraphrase_train.txt", 4)  # a train row (every 4th goes to dev)

    done = run_bertflow(["--verbose", "validate", "--mrpc-source", str(msr), "--config",
                         str(_bounds(tmp_path))], tmp_path / "home")

    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    message = done.stderr[done.stderr.rindex("invalid: "):]
    assert message.startswith(f"invalid: train.tsv ({msr}/msr_paraphrase_train.txt less the "
                              f"pairs of {msr}/dev_ids.tsv): 1 of ")
    assert "Quality is 0 or 1" in message


def test_a_missing_url_is_named_with_what_to_check(tmp_path, loopback):
    done = run_bertflow(["validate", "--mrpc-source", loopback.url + "/nothing-here"],
                        tmp_path / "home")

    assert done.returncode == 1
    assert (f"invalid: {loopback.url}/nothing-here/msr_paraphrase_train.txt: HTTP 404 Not Found\n"
            "  nothing is at that address: check --source, --mirror or --checkpoint"
            ) in done.stderr
    assert "Traceback" not in _terminal(done)


def test_a_mirror_file_that_is_not_the_pinned_one_is_refused(tmp_path, loopback):
    from tasks.download import MRPC_PUBLIC

    for name, (_, _, size) in MRPC_PUBLIC.items():
        loopback.add(f"/mirror/{name}", b"x" * size)  # the pinned size, other bytes

    done = run_bertflow(["validate", "--mirror", loopback.url + "/mirror"], tmp_path / "home")

    assert done.returncode == 1
    assert f"invalid: {loopback.url}/mirror/msr_paraphrase_train.txt: sha256 mismatch: " \
           f"expected {MRPC_PUBLIC['msr_paraphrase_train.txt'][1]}, got " in done.stderr
    assert "the file is not the one pinned" in done.stderr
    assert "Traceback" not in _terminal(done)


@pytest.mark.parametrize("args, named", [
    (["run", "--epochs", "-1"], "train.epochs"),
    (["sweep", "--batch-size", "0"], "train.batch_size"),
    (["run", "--config", "{config}"], "bad.yaml, line 2: not YAML/JSON: expected ',' or ']'"),
    (["run", "--no-such-flag"], "No such option: --no-such-flag"),
])
def test_a_bad_flag_or_config_is_a_usage_error_without_a_traceback(tmp_path, args, named):
    config = tmp_path / "bad.yaml"
    config.write_text("train: {epochs: [1\n")
    done = run_bertflow([a.format(config=config) for a in args], tmp_path / "home")
    assert done.returncode == 2
    assert named in " ".join(done.stderr.replace("│", " ").split())  # rich wraps it in a box
    assert "Traceback" not in _terminal(done)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    config = root / "bounds.yaml"
    config.write_text(BOUNDS_YAML)
    return {"msr": write_msr_files(root / "msr", train_rows=32, dev_every=3),
            "checkpoint": write_release_zip(root / "tiny.zip"), "config": config}


def _run_args(sources) -> list[str]:
    return ["run", "--mrpc-source", str(sources["msr"]), "--checkpoint",
            str(sources["checkpoint"]), "--config", str(sources["config"]), *TINY_RUN]


def _blocker(folder: Path) -> dict[str, str]:
    """PYTHONPATH with a sitecustomize that makes the test extras unimportable, as in a venv
    made by `make run`; its processes (Prefect's server, tokenize's workers) inherit it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(textwrap.dedent(f"""\
        import sys

        class Absent:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {TEST_EXTRAS!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (runtime only)")

        sys.meta_path.insert(0, Absent())
        """))
    return {"PYTHONPATH": str(folder)}


@pytest.fixture(scope="module")
def trained_home(sources, tmp_path_factory):
    """A home where the tiny flow ran once, without the test extras and without any
    TF_CPP_MIN_LOG_LEVEL of the caller's: the model collapses, so it is registered but not
    promoted (no champion)."""
    root = tmp_path_factory.mktemp("trained")
    done = run_bertflow(_run_args(sources), root / "home",
                        env={**_blocker(root / "runtime-only"), "TF_CPP_MIN_LOG_LEVEL": None})
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "home", done


def test_the_main_job_runs_without_the_test_extras_and_prints_no_tensorflow_noise(trained_home):
    _, done = trained_home
    assert "model bertflow-mrpc version 1 [challenger]" in done.stdout
    noise = [line for line in done.stderr.splitlines() if any(n in line for n in TENSORFLOW_NOISE)]
    assert noise == []
    assert "Traceback" not in _terminal(done)


def test_predict_without_a_champion_lists_the_versions_and_how_to_choose_one(trained_home):
    home, _ = trained_home
    done = run_bertflow(["predict"], home, stdin="a b\tc d\n")
    assert done.returncode == 1
    assert done.stderr.endswith(
        "error: no champion yet: no version of bertflow-mrpc in "
        f"sqlite:///{home}/mlflow/mlflow.db has been promoted (alias champion)\n"
        "  bertflow-mrpc: version 1 [challenger]\n"
        "  choose one with --model-uri, e.g. --model-uri models:/bertflow-mrpc/1\n")
    assert "Traceback" not in _terminal(done)

    chosen = run_bertflow(["predict", "--model-uri", "models:/bertflow-mrpc/1"], home,
                          stdin="a b\tc d\n")
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    label, probability = chosen.stdout.split()
    assert label in ("0", "1") and 0 <= float(probability) <= 1


def test_predict_names_an_unknown_model_uri(trained_home):
    home, _ = trained_home
    done = run_bertflow(["predict", "--model-uri", "models:/nope/1"], home, stdin="a b\tc d\n")
    assert done.returncode == 1
    assert "error: models:/nope/1: Registered Model with name=nope not found in sqlite:///" \
           in done.stderr
    assert "bertflow-mrpc: version 1 [challenger]" in done.stderr
    assert "Traceback" not in _terminal(done)


def test_predict_from_a_store_that_lost_the_model_files(trained_home, tmp_path):
    home, _ = trained_home
    artifacts = home / "mlflow" / "artifacts"
    artifacts.rename(tmp_path / "artifacts")
    try:
        done = run_bertflow(["predict", "--model-uri", "models:/bertflow-mrpc/1"], home,
                            stdin="a b\tc d\n")
    finally:
        (tmp_path / "artifacts").rename(artifacts)
    assert done.returncode == 1
    assert "error: models:/bertflow-mrpc/1: sqlite:///" in done.stderr
    assert "lists it, but its files are gone" in done.stderr and "--rerun register" in done.stderr
    assert "Traceback" not in _terminal(done)


def test_an_unreachable_tracking_server_is_named_after_the_retries(sources, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    done = run_bertflow([*_run_args(sources), "--tracking-uri", uri], tmp_path / "home",
                        env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    assert done.returncode == 1
    assert f"error: the MLflow tracking server {uri} did not answer after retries" in done.stdout
    assert "the rerun registers it without training" in done.stdout
    assert "retry 1/3 will start" in done.stderr  # Prefect's retries, one short line each
    assert "Traceback" not in _terminal(done)


def test_every_flag_of_every_command_has_help():
    import typer

    from flows.cli import app

    def commands(group, path=()):
        for name, command in group.commands.items():
            yield from commands(command, (*path, name)) if hasattr(command, "commands") else [
                ((*path, name), command)]

    missing = [f"{' '.join(path)} {param.opts[0]}"
               for path, command in commands(typer.main.get_command(app))
               for param in command.params
               if param.param_type_name == "option" and not param.help]
    assert missing == []


def test_a_config_files_home_is_used_unless_home_is_given(tmp_path):
    from flows.options import load_config

    config = tmp_path / "cfg.yaml"
    config.write_text(f"home: {tmp_path / 'from-config'}\n")
    assert load_config(config, None, {}).home == str(tmp_path / "from-config")
    assert load_config(config, tmp_path / "flag", {}).home == str(tmp_path / "flag")
    assert load_config(None, None, {}).home == str(Path(".bertflow").resolve())
