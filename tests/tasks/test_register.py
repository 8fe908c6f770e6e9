"""The register stage on a real SQLite MLflow store with real TensorFlow: what lands in the run,
which version holds `champion`, and what the served classifier answers.

One module-scoped sequence logs five runs from one tiny MRPC model and registers them in order,
each as the gate's verdict says (tests/tasks/test_challenge.py has the gate's own verdicts): v1
promoted over the majority class (champion), v2 promoted in a nested run (champion), v3 not
better (challenger only, logged twice under one run key), v4 collapsed (never champion), v5 failing
serving parity (no alias at all). The register task itself then faces champion v2 for real.
Beside it, in the same store: an MNLI model (three label names, a second dev split) and STS-B
models (regression, promoted on mse).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST, TEMPORARILY_UNAVAILABLE
from prefect import flow

from tasks.challenge import Evidence
from tasks.config import RegistryConfig
from tasks.incumbent import current_champion
from tasks.mlflow_store import (TransientRegistryError, is_transient, open_store, transient_errors,
                                using_tracking_uri)
from tasks.promotion import DECISION_ARTIFACT, LAST_TAG, Verdict, register_and_promote
from tasks.records import EvalReport, TrainedModel
from tasks.register import RUN_KEY_TAG, log_training_run, register, track
from tasks.serving import for_task_name, load_model, predict_pairs, predict_texts
from tests.artifacts import flow_artifact
from tests.fixtures import free_port
from tests.served_models import (MAX_SEQ, decided, eval_texts, keras_outputs, model_outputs,
                                 write_examples, write_manifest, write_scores, write_trained)
from tests.served_models import write_report as write_task_report

NLI_LABELS = ("contradiction", "entailment", "neutral")
PAIRS = [("the company said its shares rose on monday", "shares rose in early trading"),
         ("analysts expected lower sales of new cars", "profit reports beat forecasts")]
PARAMS = {"train.learning_rate": 2e-5, "train.epochs": 3.0, "model.max_seq_length": MAX_SEQ}
HASHES = {"data.train_sha256": "a" * 64, "data.checkpoint_sha256": "c" * 64}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> TrainedModel:
    """An MRPC model (labels "0", "1"), its logits scaled up so that p and 1 - p differ."""
    return write_trained(tmp_path_factory.mktemp("model"), "mrpc", ("0", "1"))


def write_report(folder: Path, f1: float, collapsed: bool = False, dev=None) -> EvalReport:
    metrics = {"accuracy": f1 - 0.05, "f1": f1, "precision": 0.7, "recall": 0.9, "loss": 0.5,
               "roc_auc": 0.8, "majority_baseline": 0.68, "positive_share": 0.7, "examples": 8.0}
    return write_task_report(folder, metrics, collapsed, dev=dev)


@pytest.fixture(scope="module")
def exam(trained, tmp_path_factory):
    """Six evaluation pairs labeled as the trained model answers them, a report holding its real
    outputs on them, and the gate's evidence (the training data's majority class "0")."""
    root = tmp_path_factory.mktemp("exam")
    frame = eval_texts(6)
    outputs = model_outputs(trained, frame)
    frame["label"] = [trained.labels[i] for i in outputs.argmax(axis=1)]
    evidence = Evidence(examples=write_examples(root / "dev.parquet", frame), baseline_label="0",
                        manifest=str(write_manifest(root / "manifest.json", "mrpc",
                                                    trained.labels, "1")))
    return {"root": root, "frame": frame, "outputs": outputs, "evidence": evidence,
            "report": write_report(root / "report", 0.83, dev=(frame, outputs, trained.labels))}


class Judge:
    """Hands back one verdict, and remembers the versions it was asked about."""

    def __init__(self, verdict: Verdict):
        self.verdict, self.asked = verdict, []

    def __call__(self, number: str) -> Verdict:
        self.asked.append(number)
        return self.verdict


VERDICTS = {"v1": decided("promoted", 0.80),
            "v2": decided("promoted", 0.85, "champion v1", 0.80),
            "v3": decided("not-better", 0.82, "champion v2", 0.85),
            "v4": decided("collapsed", 0.95, "champion v2", 0.85),
            "v5": decided("parity-failed", math.nan, "champion v2", None)}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The default store in a fresh home, from a working directory that must stay empty: nothing
    may fall back to MLflow's ./mlflow.db."""
    cwd = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        home = tmp_path_factory.mktemp("home")
        cfg = for_task_name(RegistryConfig(), "mrpc")
        client, experiment_id = open_store(cfg, home)
        yield {"home": home, "cfg": cfg, "client": client, "experiment_id": experiment_id}
    assert list(cwd.iterdir()) == []


@pytest.fixture(scope="module")
def sequence(store, trained, tmp_path_factory):
    client, cfg, experiment_id = store["client"], store["cfg"], store["experiment_id"]
    root = tmp_path_factory.mktemp("reports")
    extra = root / "validation.json"
    extra.write_text('{"success": true}')
    parent = client.create_run(experiment_id, run_name="sweep").info.run_id
    partial = client.create_run(experiment_id, tags={RUN_KEY_TAG: "flow-1/model-3"}).info.run_id
    plan = [("v1", 0.80, False, None, None), ("v2", 0.85, False, parent, None),
            ("v3", 0.82, False, None, "flow-1/model-3"), ("v4", 0.95, True, None, None),
            ("v5", 0.90, False, None, None)]
    out = {"parent": parent, "partial": partial}
    for key, f1, collapsed, parent_run_id, run_key in plan:
        report = write_report(root / key, f1, collapsed)
        run_id = log_training_run(client, experiment_id, trained, report, PARAMS, HASHES,
                                  [str(extra)], parent_run_id=parent_run_id, run_key=run_key)
        out[key + "_judge"] = judge = Judge(VERDICTS[key])
        out[key] = register_and_promote(client, run_id, cfg, judge)
        out[key + "_report"] = report
        model = client.get_registered_model(cfg.model_name)
        out[key + "_aliases"] = {k: str(v) for k, v in model.aliases.items()}
        out[key + "_last"] = {k.removeprefix(LAST_TAG + "."): v for k, v in model.tags.items()
                              if k.startswith(LAST_TAG + ".")}
    return out


def test_first_version_takes_both_aliases(sequence):
    v1 = sequence["v1"]
    assert (v1.version, v1.aliases, v1.promoted, v1.code) == (
        "1", ("challenger", "champion"), True, "promoted")
    assert (v1.decision, v1.value, v1.champion_value) == (VERDICTS["v1"].reason, 0.80, 0.5)
    assert sequence["v1_judge"].asked == ["1"]  # judged as the version it became


def test_champion_moves_only_as_the_verdict_says(sequence, store):
    v2, v3, v4 = (sequence[f"v{n}"] for n in range(2, 5))
    assert (v2.promoted, v2.aliases, v2.champion_value) == (True, ("challenger", "champion"), 0.80)
    assert (v3.promoted, v3.aliases, v3.champion_value) == (False, ("challenger",), 0.85)
    assert (v4.promoted, v4.code, v4.aliases) == (False, "collapsed", ("challenger",))
    assert sequence["v4_aliases"] == {"champion": "2", "challenger": "4"}
    client, name = store["client"], store["cfg"].model_name
    tags = {n: client.get_model_version(name, n).tags for n in "12345"}
    assert [tags[n]["promotion_decision"] for n in "12345"] == [
        "promoted", "promoted", "not-better", "collapsed", "parity-failed"]
    assert [sequence[f"v{n}_judge"].asked for n in range(1, 6)] == [[n] for n in "12345"]


def test_a_version_failing_parity_gets_no_alias(sequence):
    v5 = sequence["v5"]
    assert (v5.code, v5.promoted, v5.aliases, v5.champion_value) == (
        "parity-failed", False, (), None)
    assert math.isnan(v5.value) and v5.decision == VERDICTS["v5"].reason
    assert sequence["v5_aliases"] == sequence["v4_aliases"] == {"champion": "2",
                                                                "challenger": "4"}


def test_the_verdict_is_recorded_on_the_version_and_the_run(sequence, store):
    client, name = store["client"], store["cfg"].model_name
    for key, number in (("v1", "1"), ("v3", "3"), ("v5", "5")):
        verdict, version = VERDICTS[key], client.get_model_version(name, number)
        champion_value = ("none" if verdict.incumbent_value is None
                          else repr(verdict.incumbent_value))
        assert version.tags == {**verdict.tags, "promote_metric": "f1",
                                "value": repr(verdict.value), "compared_with": verdict.incumbent,
                                "champion_value": champion_value,
                                "promotion_reason": verdict.reason,
                                "promotion_decision": verdict.code}
        assert version.description == verdict.reason
        artifact = client.download_artifacts(version.run_id, DECISION_ARTIFACT)
        assert Path(artifact).read_text() == verdict.markdown


def test_the_registered_model_tells_the_last_outcome(sequence):
    for key, number in (("v1", "1"), ("v4", "4"), ("v5", "5")):
        last, verdict = sequence[f"{key}_last"], VERDICTS[key]
        assert (last["code"], last["reason"], last["version"]) == (verdict.code, verdict.reason,
                                                                    number)
        assert last["run_id"] == sequence[key].run_id


def test_run_holds_params_metrics_tags_artifacts_and_both_models(sequence, store):
    client = store["client"]
    run = client.get_run(sequence["v1"].run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"train.learning_rate": "2e-05", "train.epochs": "3.0",
                               "model.max_seq_length": "16"}
    assert run.data.metrics["dev_f1"] == 0.80 and run.data.metrics["dev_roc_auc"] == 0.8
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.71), (2, 0.64), (3, 0.52)]
    assert len(client.get_metric_history(run.info.run_id, "learning_rate")) == 3
    assert run.data.metrics["epoch_accuracy"] == 0.6
    assert {k: run.data.tags[k] for k in HASHES} == HASHES
    assert run.data.tags["collapsed"] == "false" and "mlflow.parentRunId" not in run.data.tags
    assert run.data.tags["task"] == "mrpc"
    assert run.info.run_name == f"finetune-mrpc-{run.data.tags['model_sha256'][:8]}"
    files = {f.path for folder in ("eval", "data", "train")
             for f in client.list_artifacts(run.info.run_id, folder)}
    assert files == {"eval/metrics.json", "eval/dev_predictions.tsv", "eval/summary.md",
                     "data/validation.json", "train/history.json"}
    models = {client.get_logged_model(o.model_id).name: client.get_logged_model(o.model_id)
              for o in run.outputs.model_outputs}
    assert set(models) == {"keras_model", "classifier"}
    assert client.get_run(sequence["v4"].run_id).data.tags["collapsed"] == "true"


def test_nested_run_is_tagged_with_its_parent(sequence, store):
    run = store["client"].get_run(sequence["v2"].run_id)
    assert run.data.tags["mlflow.parentRunId"] == sequence["parent"]


def test_a_retry_reuses_the_finished_run_and_version(sequence, store, trained):
    client, cfg, experiment_id = store["client"], store["cfg"], store["experiment_id"]
    v3, report = sequence["v3"], sequence["v3_report"]
    assert client.get_run(sequence["partial"]).info.lifecycle_stage == "deleted"
    again = log_training_run(client, experiment_id, trained, report, PARAMS, HASHES, [],
                             run_key="flow-1/model-3")
    assert again == v3.run_id
    assert len(client.search_runs([experiment_id], f"tags.`{RUN_KEY_TAG}` = 'flow-1/model-3'")) == 1
    judge = Judge(decided("promoted", 0.99))
    assert register_and_promote(client, again, cfg, judge) == v3
    assert judge.asked == []  # the recorded decision stands; the gate is not asked again


def test_champion_classifier_answers_raw_text_like_the_keras_model(sequence, store, trained):
    model = load_model(None, store["home"], store["cfg"])
    probabilities = predict_pairs(model, PAIRS)
    logits = keras_outputs(trained, [a for a, _ in PAIRS], [b for _, b in PAIRS])
    expected = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5)
    assert all(0 <= p <= 1 for p in probabilities)
    assert abs(probabilities[0] - probabilities[1]) > 1e-5  # the pair's text reaches the model
    frame = model.predict(pd.DataFrame({"sentence1": ["the company said"],
                                        "sentence2": ["shares rose"]}))
    assert list(frame.columns) == ["label", "probability_0", "probability_1", "probability",
                                   "model_version"]
    assert frame["label"][0] == ("1" if frame["probability"][0] >= 0.5 else "0")
    assert frame["probability_1"][0] == frame["probability"][0]
    renamed = model.predict(pd.DataFrame({"text_a": ["the company said"],
                                          "text_b": ["shares rose"]}))
    pd.testing.assert_frame_equal(renamed, frame)
    assert predict_pairs(model, []) == []


def test_classifier_loads_where_bertflow_and_prefect_are_absent(sequence, store, tmp_path):
    script = """
import json, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
try:
    import bert_core
    sys.exit("bert_core is importable: the check proves nothing")
except ImportError:
    pass
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/bertflow-mrpc@champion")
out = model.predict(pd.DataFrame({"sentence1": ["the company said"], "sentence2": ["shares rose"]}))
import bert_core
print(json.dumps({"p": out["probability"].tolist(), "prefect": "prefect" in sys.modules,
                  "bert_core": bert_core.__file__}))
"""
    uri = store["client"].tracking_uri
    done = subprocess.run([sys.executable, "-c", script, uri], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["p"]) == 1 and 0 <= result["p"][0] <= 1
    assert not result["prefect"] and "/code/bert_core/" in result["bert_core"]


def test_load_model_without_a_store_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the pipeline first"):
        load_model(None, tmp_path, RegistryConfig())


def _closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


GET_BY_NAME = "/api/2.0/mlflow/experiments/get-by-name"


@pytest.fixture
def no_http_retries(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def test_transient_failures_are_told_from_final_ones(loopback, tmp_path, no_http_retries):
    loopback.add(GET_BY_NAME, b"{}")
    loopback.fail(GET_BY_NAME, "500")
    for url, expected in ((loopback.url, TransientRegistryError),  # HTTP 500
                          (_closed_port_url(), TransientRegistryError),  # connection refused
                          (loopback.url + "/nowhere", MlflowException)):  # 404: final
        cfg = for_task_name(RegistryConfig(tracking_uri=url), "mrpc")
        with pytest.raises(expected) as info, transient_errors(url):
            open_store(cfg, tmp_path)
        assert type(info.value) is expected
    assert is_transient(MlflowException("locked", TEMPORARILY_UNAVAILABLE), remote=False)
    assert not is_transient(MlflowException("bad", BAD_REQUEST), remote=True)
    assert not is_transient(MlflowException("store bug"), remote=False)  # 500 from local code


@flow
def register_flow(trained: TrainedModel, report: EvalReport, cfg: RegistryConfig, home: str,
                  evidence: Evidence, retry_delay: float | None = None):
    task = register if retry_delay is None else register.with_options(
        retry_delay_seconds=retry_delay)
    return task(trained, report, cfg, home, PARAMS, HASHES, [], evidence)


@pytest.mark.usefixtures("prefect_api")
def test_register_task_publishes_the_gate_decision(sequence, store, trained, exam):
    """Champion v2 is this very model: re-scored on the exam it answers alike, and the new
    version, served from a fresh process, matches evaluate but is no better."""
    client = store["client"]
    champion = current_champion(client, store["cfg"].model_name)
    scores = write_scores(exam["root"] / "scores.parquet", exam["frame"], exam["outputs"],
                          trained.labels, champion.model_uri)
    evidence = exam["evidence"].model_copy(update={"incumbent": champion, "scores": scores})
    state = register_flow(trained, exam["report"], store["cfg"], str(store["home"]), evidence,
                          return_state=True)
    version = state.result()
    assert (version.version, version.code, version.aliases) == ("6", "not-better",
                                                                 ("challenger",))
    assert "vs champion v2" in version.decision and version.decision.endswith(": not better")
    flow_run_id = str(state.state_details.flow_run_id)
    run = client.get_run(version.run_id)
    assert run.data.tags["prefect.flow_run_id"] == flow_run_id
    assert run.data.tags[RUN_KEY_TAG].startswith(flow_run_id)
    markdown = flow_artifact(flow_run_id, "model-promotion")
    assert markdown == Path(client.download_artifacts(version.run_id,
                                                      DECISION_ARTIFACT)).read_text()
    assert f"Decision `not-better`: {version.decision}" in markdown
    assert "| champion v2 |" in markdown and "| gain (> 0 is better) | +0.0000 |" in markdown
    assert "Serving: served outputs match evaluate on 6 examples" in markdown
    tags = client.get_model_version(version.name, "6").tags
    assert float(tags["parity.max_abs_difference"]) < 1e-5


@pytest.mark.usefixtures("prefect_api")
def test_register_task_retries_transient_errors_only(loopback, trained, exam, tmp_path,
                                                     no_http_retries):
    report = exam["report"]
    loopback.add(GET_BY_NAME, b"{}")
    loopback.fail(GET_BY_NAME, "500", "500", "500", "500")
    cfg = for_task_name(RegistryConfig(tracking_uri=loopback.url), "mrpc")
    state = register_flow(trained, report, cfg, str(tmp_path), exam["evidence"], retry_delay=0,
                          return_state=True)
    assert state.is_failed() and loopback.requests.count(GET_BY_NAME) == 4  # 1 + 3 retries
    cfg = for_task_name(RegistryConfig(tracking_uri=loopback.url + "/nowhere"), "mrpc")
    state = register_flow(trained, report, cfg, str(tmp_path), exam["evidence"], retry_delay=0,
                          return_state=True)
    assert state.is_failed() and loopback.requests.count("/nowhere" + GET_BY_NAME) == 1


def test_dev_evaluations_during_training_are_metrics_at_their_step():
    """eval_loss and eval_accuracy at each evaluation's training step, beside the step loss."""
    from tasks.register import run_metrics

    history = {"steps": [1, 2, 3, 4], "loss": [0.7, 0.6, 0.5, 0.4], "learning_rate": [0.0] * 4,
               "epochs": [], "evaluations": [{"step": 2, "loss": 0.65, "accuracy": 0.5},
                                             {"step": 4, "loss": 0.55, "accuracy": 0.75}],
               "examples_per_second": 10.0}
    report = EvalReport.model_construct(metrics={"accuracy": 0.75})
    metrics = run_metrics(report, history, timestamp=0)
    curve = {(m.key, m.step): m.value for m in metrics if m.key.startswith("eval_")}
    assert curve == {("eval_loss", 2): 0.65, ("eval_accuracy", 2): 0.5,
                     ("eval_loss", 4): 0.55, ("eval_accuracy", 4): 0.75}
    assert [m.step for m in metrics if m.key == "train_loss"] == [1, 2, 3, 4]


# -- other tasks: label names, regression, a promote metric of the task's own --------------------

NLI_PAIRS = [("a man is playing a guitar", "a man plays music"),
             ("the company said its shares rose", "profit reports beat forecasts"),
             ("analysts expected lower sales", "sales of new cars fell on monday")]


FIRST = decided("promoted", 0.7)


def register_task(store, trained: TrainedModel, report: EvalReport, metric: str | None = None,
                  verdict: Verdict = FIRST):
    """Log and register `trained` in the store under its task's experiment and model, the
    version judged as `verdict` says."""
    cfg = for_task_name(RegistryConfig(promote_metric=metric), trained.task)
    client, experiment_id = open_store(cfg, store["home"])
    run_id = log_training_run(client, experiment_id, trained, report, PARAMS, HASHES, [])
    return register_and_promote(client, run_id, cfg, lambda number: verdict)


def served_model(store, uri: str):
    """The served model as a user loads it: mlflow.pyfunc.load_model on the store's URI."""
    with using_tracking_uri(store["client"].tracking_uri):
        return mlflow.pyfunc.load_model(uri)


@pytest.fixture(scope="module")
def mnli(store, tmp_path_factory):
    root = tmp_path_factory.mktemp("mnli")
    trained = write_trained(root / "model", "mnli", NLI_LABELS)
    report = write_task_report(root / "report", {"accuracy": 0.61},
                               splits={"dev_mismatched": {"accuracy": 0.58}})
    return trained, register_task(store, trained, report)


def test_label_names_travel_with_the_model_and_its_signature(mnli, store):
    trained, version = mnli
    run = store["client"].get_run(version.run_id)
    assert run.info.run_name == f"finetune-mnli-{trained.model_sha256[:8]}"
    assert run.data.tags["task"] == "mnli"
    assert run.data.metrics["dev_accuracy"] == 0.61
    assert run.data.metrics["dev_mismatched_accuracy"] == 0.58
    assert (version.name, version.metric, version.promoted) == ("bertflow-mnli", "accuracy", True)

    model = served_model(store, "models:/bertflow-mnli@champion")
    inputs = model.metadata.get_input_schema().inputs
    assert [(c.name, c.required) for c in inputs] == [("text_a", True), ("text_b", False)]
    assert model.metadata.get_output_schema().input_names() == [
        "label", "probability_contradiction", "probability_entailment", "probability_neutral",
        "model_version"]
    frame = model.predict(pd.DataFrame(NLI_PAIRS, columns=["text_a", "text_b"]))
    probabilities = frame[[f"probability_{label}" for label in NLI_LABELS]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-9)
    assert list(frame["label"]) == [NLI_LABELS[i] for i in probabilities.argmax(axis=1)]
    logits = keras_outputs(trained, *map(list, zip(*NLI_PAIRS)))
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5)
    assert np.ptp(probabilities, axis=0).max() > 1e-5  # the texts reach the model
    answers = predict_texts(model, NLI_PAIRS)
    assert list(answers["label"]) == list(frame["label"])
    np.testing.assert_allclose(answers["probability"], probabilities.max(axis=1))


@pytest.fixture(scope="module")
def stsb(store, tmp_path_factory):
    """Three STS-B models judged on mse: 0.50 (first), 0.40 (better), 0.45 (not better)."""
    root = tmp_path_factory.mktemp("stsb")
    verdicts = [decided("promoted", 0.50, "constant-mean predictor", 2.1, "mse"),
                decided("promoted", 0.40, "champion v1", 0.50, "mse"),
                decided("not-better", 0.45, "champion v2", 0.40, "mse")]
    versions = []
    for seed, verdict in enumerate(verdicts):
        trained = write_trained(root / f"model-{seed}", "stsb", (), scale=20.0, seed=seed)
        report = write_task_report(root / f"report-{seed}",
                                   {"pearson": 0.8, "spearman": 0.79, "mse": verdict.value})
        versions.append((trained, register_task(store, trained, report, "mse", verdict)))
    return versions


def test_a_regression_model_serves_a_score(stsb, store):
    trained, version = stsb[1]
    model = served_model(store, "models:/bertflow-stsb@champion")
    assert model.metadata.get_output_schema().input_names() == ["score", "model_version"]
    frame = model.predict(pd.DataFrame(NLI_PAIRS, columns=["text_a", "text_b"]))
    assert list(frame.columns) == ["score", "model_version"]
    assert frame["score"].dtype == np.float64
    expected = keras_outputs(trained, *map(list, zip(*NLI_PAIRS)))[:, 0]
    np.testing.assert_allclose(frame["score"], expected, rtol=1e-5)
    assert frame["score"].nunique() == len(NLI_PAIRS)
    pd.testing.assert_frame_equal(predict_texts(model, NLI_PAIRS), frame[["score"]])


def test_a_regression_model_is_judged_on_its_mse(stsb):
    first, better, worse = (version for _, version in stsb)
    assert [v.metric for v in (first, better, worse)] == ["mse"] * 3
    assert (first.promoted, better.promoted, worse.promoted) == (True, True, False)
    assert (better.value, better.champion_value, worse.champion_value) == (0.40, 0.50, 0.40)
    assert worse.aliases == ("challenger",) and "champion" in better.aliases


def test_a_single_sentence_model_takes_text_a_only(store, tmp_path):
    trained = write_trained(tmp_path / "model", "sst2", ("0", "1"))
    version = register_task(store, trained, write_task_report(tmp_path / "r", {"accuracy": 0.9}))
    model = served_model(store, f"models:/{version.name}/{version.version}")
    inputs = model.metadata.get_input_schema().inputs
    assert [(c.name, c.required) for c in inputs] == [("text_a", True)]
    sentences = ["a gripping , funny film", "the plot is a mess"]
    frame = model.predict(pd.DataFrame({"text_a": sentences}))
    logits = keras_outputs(trained, sentences, None)
    np.testing.assert_allclose(frame["probability"], np.exp(logits[:, 1]) / np.exp(logits).sum(1),
                               rtol=1e-5)
    assert list(frame.columns) == ["label", "probability_0", "probability_1", "probability",
                                   "model_version"]


# -- calibrated decisions and the model card, through track then register in one flow run ---------

LINEAGE = {"task": "mrpc", "sha256.train.tsv": "a" * 64, "sha256.dev.tsv": "b" * 64,
           "sha256.checkpoint": "c" * 64, "data.digest": "d" * 64, "drop": "2026-11-30",
           "training.key": "e" * 64}


@flow
def track_then_register(trained: TrainedModel, report: EvalReport, cfg: RegistryConfig,
                        home: str, evidence: Evidence, extra: list[str]):
    """A sweep's shape: the trial logged by `track`, then registered by `register`."""
    run_id = track(trained, report, cfg, home, PARAMS, LINEAGE, extra)
    return run_id, register(trained, report, cfg, home, PARAMS, LINEAGE, extra, evidence)


@pytest.fixture(scope="module")
def calibrated(prefect_api, tmp_path_factory):
    """An overconfident MRPC model (its dev needs T near 3) on 40 evaluation pairs labeled as
    it answers but for every fifth, promoted on loss over the majority class."""
    root = tmp_path_factory.mktemp("calibrated")
    trained = write_trained(root / "model", "mrpc", ("0", "1"), scale=3.0, gain=30.0)
    frame = eval_texts(40)
    outputs = model_outputs(trained, frame)
    truth = outputs.argmax(axis=1)
    truth[::5] = 1 - truth[::5]
    frame["label"] = [trained.labels[i] for i in truth]
    evidence = Evidence(examples=write_examples(root / "dev.parquet", frame), baseline_label="0",
                        manifest=str(write_manifest(root / "manifest.json", "mrpc",
                                                    trained.labels, "1")), lineage=LINEAGE)
    report = write_report(root / "report", 0.83, dev=(frame, outputs, trained.labels))
    profile = root / "profile" / "profile.json"
    profile.parent.mkdir()
    profile.write_text(json.dumps({"truncated_share": 0.25}))
    cfg = for_task_name(RegistryConfig(promote_metric="loss"), "mrpc")
    run_id, version = track_then_register(trained, report, cfg, str(root / "home"), evidence,
                                          [str(profile)])
    client, _ = open_store(cfg, root / "home")
    with using_tracking_uri(client.tracking_uri):
        folder = mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}",
                                                     dst_path=str(root / "served"))
    config = json.loads((Path(folder) / "artifacts" / "model_config.json").read_text())
    record = json.loads(Path(client.download_artifacts(
        version.run_id, "calibration/calibration.json")).read_text())
    return {"trained": trained, "frame": frame, "truth": truth, "report": report,
            "client": client, "run_id": run_id, "version": version, "config": config,
            "record": record}


def test_the_served_config_carries_the_temperature_and_threshold_fitted_on_dev(calibrated):
    config, record = calibrated["config"], calibrated["record"]
    assert record["temperature"] == pytest.approx(2.8, abs=0.5) and record["rule"] == "max_f1"
    assert record["ece_before"] is not None and record["brier_after"] < record["brier_before"]
    assert (config["temperature"], config["threshold"]) == (record["temperature"],
                                                            record["threshold"])
    assert 0 < config["threshold"] < 1
    assert (config["max_batch_rows"], config["memo_words"]) == (1024, 50_000)
    assert calibrated["version"].run_id == calibrated["run_id"]  # register took track's run


def test_calibration_is_on_the_run_and_the_version(calibrated):
    client, version, record = calibrated["client"], calibrated["version"], calibrated["record"]
    run = client.get_run(version.run_id)
    names = {a.path for a in client.list_artifacts(version.run_id, "calibration")}
    assert names == {"calibration/calibration.json", "calibration/reliability.png"}
    assert run.data.metrics["calibration_ece_before"] == pytest.approx(record["ece_before"])
    assert run.data.metrics["calibration_brier_after"] == pytest.approx(record["brier_after"])
    tags = client.get_model_version(version.name, version.version).tags
    for where in (run.data.tags, tags):
        assert float(where["calibration.temperature"]) == record["temperature"]
        assert float(where["calibration.threshold"]) == record["threshold"]


def test_the_served_model_answers_calibrated_and_passes_parity(calibrated):
    client, version, config = calibrated["client"], calibrated["version"], calibrated["config"]
    frame, trained = calibrated["frame"], calibrated["trained"]
    tags = client.get_model_version(version.name, version.version).tags
    assert version.code == "promoted" and float(tags["parity.max_abs_difference"]) < 1e-5
    with using_tracking_uri(client.tracking_uri):
        model = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}")
    answer = model.predict(frame[["text_a", "text_b"]])
    logits = keras_outputs(trained, frame["text_a"].tolist(), frame["text_b"].tolist())
    z = logits / config["temperature"]
    expected = np.exp(z[:, 1]) / np.exp(z).sum(axis=1)
    np.testing.assert_allclose(answer["probability"], expected, rtol=1e-5)
    assert list(answer["label"]) == ["1" if p >= config["threshold"] else "0"
                                     for p in answer["probability"]]
    tsv = pd.read_csv(Path(calibrated["report"].report_dir) / "dev_predictions.tsv", sep="\t")
    raw = tsv[["p_0", "p_1"]].to_numpy()
    served_loss = -np.mean(np.log(np.where(calibrated["truth"] == 1, expected, 1 - expected)))
    assert version.value == pytest.approx(served_loss, abs=1e-4)  # the gate judged what serves
    assert abs(version.value - -np.mean(np.log(raw[np.arange(40), calibrated["truth"]]))) > 1e-3


def test_the_version_description_is_its_model_card(calibrated):
    client, version = calibrated["client"], calibrated["version"]
    description = client.get_model_version(version.name, version.version).description
    card = Path(client.download_artifacts(version.run_id, "model_card.md")).read_text()
    assert description == card
    assert card.startswith(f"# bertflow-mrpc v{version.version}\n\n{version.decision}\n")
    for key in ("drop", "data.digest", "training.key", "sha256.train.tsv", "sha256.checkpoint"):
        assert f"| {key} | `{LINEAGE[key]}` |" in card
    uri = f"models:/bertflow-mrpc/{version.version}"
    assert f"mlflow models serve -m {uri} --env-manager local -h 127.0.0.1 -p 5001" in card
    assert f"bertflow score --input FILE --output FILE.parquet --model-uri {uri}" in card
    assert f"Temperature T = {calibrated['record']['temperature']:.4g}" in card
    assert "25.0% of its training examples" in card and "| loss |" in card
