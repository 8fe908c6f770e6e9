"""`bertflow predict` as a user runs it, on models of several tasks registered in a real store:
each line answered with the label's name and its probability (a score for regression), one or
two fields per line as the model reads, and the champion of `--task`'s model by default. And the
served model itself: every answer names its version, a frame it cannot answer is refused saying
why, and the temperature and threshold of its model_config.json decide its answers."""

from __future__ import annotations

import json
import re

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from bert_core.model import softmax

from tasks.config import RegistryConfig
from tasks.mlflow_store import open_store, using_tracking_uri
from tasks.promotion import register_and_promote
from tasks.register import BERT_CORE_DIR, PYFUNC_CODE, log_training_run, served_signature
from tasks.serving import for_task_name
from tests.fixtures import run_bertflow
from tests.served_models import decided, keras_outputs, write_report, write_trained

PAIRS = [("the company said its shares rose", "shares rose on monday"),
         ("analysts expected lower sales", "profit reports beat forecasts")]
MODELS = {"mrpc": (("0", "1"), "f1"), "rte": (("entailment", "not_entailment"), "accuracy"),
          "sst2": (("0", "1"), "accuracy"), "stsb": ((), "pearson")}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home whose store holds one champion per task in MODELS."""
    root = tmp_path_factory.mktemp("predict")
    home = root / "home"
    for task, (labels, metric) in MODELS.items():
        trained = write_trained(root / task / "model", task, labels, scale=20.0)
        report = write_report(root / task / "report", {metric: 0.7})
        cfg = for_task_name(RegistryConfig(), task)
        client, experiment_id = open_store(cfg, home)
        run_id = log_training_run(client, experiment_id, trained, report, {}, {}, [])
        first = decided("promoted", 0.7, metric=metric)
        assert register_and_promote(client, run_id, cfg, lambda number: first).promoted
    return home


def served(home, task: str, frame: pd.DataFrame) -> pd.DataFrame:
    """What the task's champion answers in this process, loaded as any MLflow user does."""
    with using_tracking_uri(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"):
        return mlflow.pyfunc.load_model(f"models:/bertflow-{task}@champion").predict(frame)


def said(done) -> str:
    """stderr as one line of words, out of the box the terminal draws around a usage error."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", done.stderr).split())


def answered(done) -> list[list[str]]:
    assert done.returncode == 0, done.stderr[-3000:]
    return [line.split("\t") for line in done.stdout.strip().splitlines()]


def test_a_pair_model_answers_label_names_and_their_probability(home):
    lines = answered(run_bertflow(["predict", "--task", "rte"], home,
                                  stdin="".join(f"{a}\t{b}\n" for a, b in PAIRS)))
    expected = served(home, "rte", pd.DataFrame(PAIRS, columns=["text_a", "text_b"]))
    assert [label for label, _ in lines] == list(expected["label"])
    for (label, probability), row in zip(lines, expected.to_dict("records")):
        assert float(probability) == pytest.approx(row[f"probability_{label}"], abs=1e-6)
        assert float(probability) >= 0.5  # the likelier of two labels


def test_mrpc_is_the_default_task_and_answers_as_before(home):
    lines = answered(run_bertflow(["predict"], home, stdin=f"{PAIRS[0][0]}\t{PAIRS[0][1]}\n"))
    [[label, probability]] = lines
    expected = served(home, "mrpc", pd.DataFrame([PAIRS[0]], columns=["sentence1", "sentence2"]))
    p = expected["probability"][0]  # that of "1", a paraphrase
    assert label == ("1" if p >= 0.5 else "0")
    assert float(probability) == pytest.approx(p if label == "1" else 1 - p, abs=1e-6)


def test_a_single_sentence_model_reads_one_field_per_line(home):
    sentences = ["a gripping , funny film", "the plot is a mess"]
    lines = answered(run_bertflow(["predict", "--task", "sst2"], home,
                                  stdin="".join(s + "\n" for s in sentences)))
    expected = served(home, "sst2", pd.DataFrame({"text_a": sentences}))
    assert [label for label, _ in lines] == list(expected["label"])

    done = run_bertflow(["predict", "--task", "sst2"], home, stdin="a fine film\na\tb\n")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "line 2: the single-sentence model expects text_a, got 2 field(s)" in said(done)


def test_a_regression_model_answers_a_score_per_line(home):
    lines = answered(run_bertflow(["predict", "--task", "stsb"], home,
                                  stdin="".join(f"{a}\t{b}\n" for a, b in PAIRS)))
    expected = served(home, "stsb", pd.DataFrame(PAIRS, columns=["text_a", "text_b"]))
    assert [float(score) for [score] in lines] == pytest.approx(list(expected["score"]),
                                                                abs=1e-6)


def test_an_unknown_task_is_refused_naming_the_tasks(home):
    done = run_bertflow(["predict", "--task", "squad"], home, stdin="a\tb\n")
    assert done.returncode != 0 and "'squad': one of mrpc, cola, sst2" in said(done)


def test_every_answer_names_the_version_that_gave_it(home):
    for task in MODELS:
        frame = served(home, task, pd.DataFrame(PAIRS, columns=["text_a", "text_b"]))
        assert list(frame["model_version"]) == [f"bertflow-{task}/1"] * len(PAIRS)


@pytest.mark.parametrize("frame,named", [
    (pd.DataFrame({"text_b": ["shares rose"]}), "text_a"),
    (pd.DataFrame({"text_a": ["shares rose", None], "text_b": ["a", "b"]}), "row 1: text_a"),
    (pd.DataFrame({"text_a": ["shares rose"], "text_b": [None]}), "row 0: text_b"),
    (pd.DataFrame({"text_a": pd.Series([], dtype=object), "text_b": pd.Series([], dtype=object)}),
     "empty batch"),
    (pd.DataFrame({"text_a": ["a"] * 1025, "text_b": ["b"] * 1025}),
     "1025 rows in one request, more than max_batch_rows 1024"),
], ids=["no-text_a", "null-text_a", "null-text_b", "empty", "too-many-rows"])
def test_a_frame_the_model_cannot_answer_is_refused_saying_why(home, frame, named):
    with pytest.raises(MlflowException, match=re.escape(named)) as refused:
        served(home, "rte", frame)
    assert refused.value.get_http_status_code() == 400


def saved(folder, trained, config: dict) -> mlflow.pyfunc.PyFuncModel:
    """The served model of `trained` saved (not registered) with extra model_config.json keys."""
    config_file = folder.parent / f"{folder.name}-config.json"
    config_file.write_text(json.dumps({"max_seq_length": trained.max_seq_length,
                                       "do_lower_case": True, "labels": list(trained.labels),
                                       "regression": False, "pair": True, **config}))
    mlflow.pyfunc.save_model(
        folder, python_model=PYFUNC_CODE, code_paths=[str(BERT_CORE_DIR)],
        artifacts={"keras_model": str(trained.keras_file), "vocab": str(trained.vocab_file),
                   "model_config": str(config_file)},
        signature=served_signature(trained.labels, pair=True))
    return mlflow.pyfunc.load_model(str(folder))


def test_temperature_and_threshold_decide_the_answers(tmp_path):
    trained = write_trained(tmp_path / "model", "rte", ("entailment", "not_entailment"),
                            scale=1.0, gain=30.0)
    texts = pd.DataFrame([(f"the company said {w}", "shares rose") for w in
                          ("its", "shares", "rose", "in", "early", "trading", "on", "monday")],
                         columns=["text_a", "text_b"])
    logits = keras_outputs(trained, texts["text_a"].tolist(), texts["text_b"].tolist())
    plain = saved(tmp_path / "plain", trained, {}).predict(texts)
    assert set(plain["model_version"]) == {"unregistered"}  # saved, never registered
    np.testing.assert_allclose(plain["probability"], softmax(logits)[:, 1], atol=1e-6)

    p = softmax(np.asarray(logits, np.float64) / 4.0)[:, 1]
    threshold = float(np.median(p))  # half the texts on either side of it
    assert ((p >= threshold) != (p >= 0.5)).any()  # where it differs from the likelier class
    calibrated = saved(tmp_path / "calibrated", trained, {"temperature": 4.0,
                                                          "threshold": threshold})
    answer = calibrated.predict(texts)
    np.testing.assert_allclose(answer["probability_not_entailment"], p, atol=1e-6)
    assert list(answer["label"]) == ["not_entailment" if x >= threshold else "entailment"
                                     for x in p]
    assert list(answer["label"]) != list(plain["label"])
