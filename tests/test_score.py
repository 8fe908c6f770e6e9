"""`bertflow score` as a user runs it, on models registered in a real store: every input row
answered or named in the rejects file, the served model's own answers, each input format, memory
bounded on a big file, and nothing published by a run that fails."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest

from data_contracts.errors import ContractViolation
from tasks.mlflow_store import using_tracking_uri
from tasks.score import ScoreConfig, score_file
from tests import test_predict
from tests.fixtures import run_bertflow
from tests.task_files import sentence

home = test_predict.home  # the fixture: a store with a champion of each of its tasks
served = test_predict.served

MRPC_HEADER = "\ufeffindex\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
BIG_ROWS = 100_000
RSS_LIMIT = 1.5 * 2**30


def pyfunc(home, task: str):
    """The task's champion, loaded in this process as any MLflow user does."""
    with using_tracking_uri(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"):
        return mlflow.pyfunc.load_model(f"models:/bertflow-{task}@champion")


def write_pairs_tsv(path: Path, rows: int, blank_every: int = 0, seed: int = 0) -> list[int]:
    """MRPC's test.tsv layout (BOM, unbalanced quotes); every `blank_every`-th row has an empty
    second sentence. Returns the 1-based numbers of those rows."""
    rng, blank = random.Random(seed), []
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(MRPC_HEADER)
        for i in range(rows):
            b = sentence(rng)
            if blank_every and i % blank_every == blank_every - 1:
                b, _ = "", blank.append(i + 1)
            f.write(f"{i}\t{2 * i}\t{2 * i + 1}\t{sentence(rng, quote=i % 7 == 0)}\t{b}\n")
    return blank


def score_with_memory(args: list[str], home: Path, timeout_s: float = 300):
    """`bertflow <args>` in a fresh process (as run_bertflow runs it), its peak RSS polled:
    (completed process, peak RSS of the bertflow process, peak RSS of its whole tree)."""
    exe = Path(sys.executable).with_name("bertflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen([str(exe), *args, "--home", str(home)], env=env, cwd=home.parent,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = [0, 0]

    def poll():
        main = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                tree = [main, *main.children(recursive=True)]
                sizes = [p.memory_info().rss for p in tree]
            except psutil.Error:
                continue
            peaks[0], peaks[1] = max(peaks[0], sizes[0]), max(peaks[1], sum(sizes))
            time.sleep(0.05)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    finally:
        process.kill()
        watcher.join()
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr), *peaks


def said(done) -> str:
    return " ".join(done.stderr.split())


@pytest.mark.slow
def test_a_100k_row_file_is_scored_in_bounded_memory(home, tmp_path):
    source, out = tmp_path / "pairs.tsv", tmp_path / "scores.parquet"
    blank = write_pairs_tsv(source, BIG_ROWS, blank_every=9973)
    started = time.monotonic()
    done, peak, tree = score_with_memory(["score", "--input", str(source), "--output", str(out),
                                          "--chunk-rows", "4096"], home)
    seconds = time.monotonic() - started
    print(f"\n100k rows: {seconds:.1f} s, peak RSS {peak / 2**20:.0f} MiB "
          f"(process tree {tree / 2**20:.0f} MiB)")
    assert done.returncode == 0, done.stderr[-3000:]
    assert peak < RSS_LIMIT, f"peak RSS {peak / 2**20:.0f} MiB"

    answers = pq.read_table(out).to_pandas()
    assert len(answers) == BIG_ROWS - len(blank)
    assert list(answers.columns) == ["index", "label", "probability_0", "probability_1",
                                     "probability", "model_version"]
    assert set(answers["model_version"]) == {"bertflow-mrpc/1"}
    rejects = pd.read_csv(out.with_name("scores.rejects.csv"), dtype=str)
    assert rejects["row"].astype(int).tolist() == blank
    assert rejects["id"].tolist() == [str(row - 1) for row in blank]  # the file's index
    assert set(rejects["column"]) == {"#2 String"} and set(rejects["reason"]) == {"empty text"}
    assert f"scored {BIG_ROWS - len(blank)} of {BIG_ROWS} rows ({len(blank)} rejected)" in \
        done.stdout

    frame = pd.read_csv(source, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, encoding="utf-8-sig",
                        keep_default_na=False)
    sample = answers.sample(300, random_state=0)
    texts = frame.set_index("index").loc[sample["index"], ["#1 String", "#2 String"]]
    expected = served(home, "mrpc", texts.set_axis(["text_a", "text_b"], axis=1))
    assert sample["label"].tolist() == expected["label"].tolist()
    assert sample["probability_1"].to_numpy() == pytest.approx(
        expected["probability_1"].to_numpy(), abs=1e-7)


def test_every_format_is_read_with_its_columns_and_rejects(home, tmp_path):
    model = pyfunc(home, "sst2")
    texts = ["a gripping , funny film", None, "the plot , is a mess", "   ", 'said "no', "ok ."]
    wanted = [0, 2, 4, 5]
    files = {"csv": tmp_path / "in.csv", "jsonl": tmp_path / "in.jsonl",
             "parquet": tmp_path / "in.parquet", "tsv": tmp_path / "in.tsv"}
    frame = pd.DataFrame({"review_id": [f"r{i}" for i in range(6)], "review": texts})
    frame.to_csv(files["csv"], index=False, encoding="utf-8-sig")
    with open(files["jsonl"], "w") as f:
        for i, text in enumerate(texts):
            record = {"review_id": f"r{i}"} if text is None else {"review_id": f"r{i}",
                                                                   "review": text}
            f.write(json.dumps(record) + "\n\n")
    frame.to_parquet(files["parquet"])
    files["tsv"].write_text("review_id\treview\n" + "".join(
        f"r{i}\t{t or ''}\n" for i, t in enumerate(texts)), encoding="utf-8")
    expected = model.predict(pd.DataFrame({"text_a": [texts[i] for i in wanted]}))
    for fmt, path in files.items():
        out = tmp_path / f"{fmt}.parquet"
        summary = score_file(model, ScoreConfig(input=str(path), output=str(out), task="custom",
                                                text_a="review", id="review_id", chunk_rows=2),
                             "bertflow-sst2/1")
        answers = pq.read_table(out).to_pandas()
        assert answers["review_id"].tolist() == [f"r{i}" for i in wanted], fmt
        assert answers["probability_1"].tolist() == pytest.approx(
            expected["probability_1"].tolist(), abs=1e-7), fmt
        rejects = pd.read_csv(tmp_path / f"{fmt}.rejects.csv", dtype=str)
        # a CSV or TSV cell is never null, only empty
        reason = "empty text" if fmt in ("csv", "tsv") else "missing text"
        assert rejects.values.tolist() == [["2", "r1", "review", reason],
                                           ["4", "r3", "review", "empty text"]], fmt
        assert (summary.rows, summary.scored, summary.rejected) == (6, 4, 2)


def test_a_regression_model_answers_a_score_and_the_row_number(home, tmp_path):
    source, out = tmp_path / "pairs.csv", tmp_path / "scores.parquet"
    pairs = pd.DataFrame({"a": ["a man is eating .", "shares rose"], "b": ["he eats .", "up"]})
    pairs.to_csv(source, index=False)
    summary = score_file(pyfunc(home, "stsb"), ScoreConfig(input=str(source), output=str(out),
                                                           task="custom", text_a="a",
                                                           text_b="b"), "bertflow-stsb/1")
    answers = pq.read_table(out).to_pandas()
    assert list(answers.columns) == ["row", "score", "model_version"]
    assert answers["row"].tolist() == [1, 2] and summary.scored == 2
    expected = served(home, "stsb", pairs.set_axis(["text_a", "text_b"], axis=1))
    assert answers["score"].tolist() == pytest.approx(expected["score"].tolist(), abs=1e-7)


def test_a_run_that_fails_midway_publishes_nothing_and_keeps_the_old_output(home, tmp_path):
    source, out = tmp_path / "pairs.tsv", tmp_path / "scores.parquet"
    write_pairs_tsv(source, 3000)
    score_file(pyfunc(home, "mrpc"), ScoreConfig(input=str(source), output=str(out)),
               "bertflow-mrpc/1")
    good = out.read_bytes()
    rejects = out.with_name("scores.rejects.csv").read_bytes()

    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2500] = lines[2500].replace("\t", "\t\t", 1)  # a stray tab, well past the first chunk
    source.write_text("".join(lines), encoding="utf-8")
    done = run_bertflow(["score", "--input", str(source), "--output", str(out),
                         "--chunk-rows", "500"], home)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert str(source) in said(done) and "Expected 5 columns, got 6" in said(done)
    assert out.read_bytes() == good
    assert out.with_name("scores.rejects.csv").read_bytes() == rejects
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.tsv", "scores.parquet",
                                                          "scores.rejects.csv"]


def test_bad_input_exits_1_naming_the_file_and_the_problem(home, tmp_path):
    source = tmp_path / "reviews.csv"
    source.write_text("id,review\n1,a fine film\n")
    done = run_bertflow(["score", "--input", str(source), "--output",
                         str(tmp_path / "out.parquet"), "--task", "custom", "--text-a", "text",
                         "--model-uri", "models:/bertflow-sst2/1"], home)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"{source}: columns: no column 'text' (found 'id', 'review')" in said(done)
    assert not (tmp_path / "out.parquet").exists()

    with pytest.raises(FileNotFoundError, match="absent.tsv: no such file"):
        score_file(pyfunc(home, "mrpc"), ScoreConfig(input=str(tmp_path / "absent.tsv"),
                                                     output=str(tmp_path / "out.parquet")), "")
    with pytest.raises(ContractViolation, match="reviews.csv: columns: the model reads sentence "
                                                "pairs: name the second text's column"):
        score_file(pyfunc(home, "mrpc"), ScoreConfig(input=str(source), task="custom",
                                                     text_a="review",
                                                     output=str(tmp_path / "out.parquet")), "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.csv"]
