"""The gate's verdict on a real registered classifier in a real SQLite MLflow store: the version is
served from a fresh process and must answer the evaluation set as evaluate's dev_predictions.tsv
says, then faces the majority-class predictor or the champion's outputs on the same examples.

One module-scoped sequence of three versions of one MRPC model, each through
register_and_promote as the register stage calls it: v1 with its true outputs (promoted over the
majority class), v2 with outputs off by 1e-3 (parity fails: no alias moves), v3 with its true
outputs against champion v1 scored as another model answers (the decision names champion v1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.challenge import Evidence, verdict
from tasks.config import RegistryConfig
from tasks.gate import constant_outputs, judge, metric_value
from tasks.incumbent import current_champion
from tasks.mlflow_store import open_store
from tasks.promotion import DECISION_ARTIFACT, LAST_TAG, register_and_promote
from tasks.register import log_training_run
from tasks.serving import for_task_name
from tests.served_models import (eval_texts, model_outputs, write_examples, write_manifest,
                                 write_report, write_scores, write_trained)

pytestmark = pytest.mark.slow

MRPC = ("0", "1")
ROWS = 40
METRICS = {"accuracy": 0.8, "f1": 0.8}


def tsv_outputs(report_dir: str) -> np.ndarray:
    """The p_0, p_1 columns of a report's dev_predictions.tsv, as the gate must read them."""
    frame = pd.read_csv(Path(report_dir) / "dev_predictions.tsv", sep="\t", dtype={"guid": str})
    return frame[["p_0", "p_1"]].to_numpy(np.float64)


def gate_on(truth: np.ndarray, challenger: np.ndarray, incumbent: np.ndarray, name: str,
            cfg: RegistryConfig, frame: pd.DataFrame):
    """tasks.gate.judge on the arrays themselves, with the registry slice's settings."""
    return judge(truth, challenger, incumbent, metric="f1", labels=MRPC, positive=1,
                 incumbent_name=name, collapsed=False, collapse_reason=None,
                 min_delta=cfg.min_delta, alpha=cfg.alpha, resamples=cfg.bootstrap_resamples,
                 seed=cfg.seed, guids=frame["guid"].tolist(), text_a=frame["text_a"].tolist(),
                 text_b=frame["text_b"].tolist())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store, a model whose answers vary by text, and an evaluation set labeled as the model
    answers but for every fifth example."""
    root = tmp_path_factory.mktemp("challenge")
    cfg = for_task_name(RegistryConfig(), "mrpc")
    client, experiment_id = open_store(cfg, root / "home")
    trained = write_trained(root / "model", "mrpc", MRPC, scale=1.0, gain=30.0)
    frame = eval_texts(ROWS)
    outputs = model_outputs(trained, frame)
    truth = outputs.argmax(axis=1)
    truth[::5] = 1 - truth[::5]
    assert 0 < truth.sum() < ROWS  # both classes: the majority-class predictor can be beaten
    frame["label"] = [MRPC[i] for i in truth]
    evidence = Evidence(examples=write_examples(root / "eval" / "dev.parquet", frame),
                        manifest=str(write_manifest(root / "manifest.json", "mrpc", MRPC, "1")),
                        baseline_label="0", lineage={"drop": "2026-11-30"})
    return {"root": root, "cfg": cfg, "client": client, "experiment_id": experiment_id,
            "trained": trained, "frame": frame, "outputs": outputs, "truth": truth,
            "evidence": evidence}


def register_judged(world, report, evidence):
    """Log a run of the model with `report` and register it, the gate's verdict deciding."""
    client, cfg, trained = world["client"], world["cfg"], world["trained"]
    run_id = log_training_run(client, world["experiment_id"], trained, report, {}, {}, [])
    return register_and_promote(client, run_id, cfg, lambda number: verdict(
        f"models:/{cfg.model_name}/{number}", client.tracking_uri, trained, report, evidence,
        cfg))


@pytest.fixture(scope="module")
def sequence(world):
    root, frame, outputs = world["root"], world["frame"], world["outputs"]
    true_report = write_report(root / "v1", METRICS, dev=(frame, outputs, MRPC))
    off_report = write_report(root / "v2", METRICS,
                              dev=(frame, outputs + [[-1e-3, 1e-3]], MRPC))
    out = {"v1": register_judged(world, true_report, world["evidence"]),
           "v2": register_judged(world, off_report, world["evidence"])}
    model = world["client"].get_registered_model(world["cfg"].model_name)
    out["after_v2"] = {"tags": model.tags, "aliases": {k: str(v) for k, v in model.aliases.items()}}
    out["champion"] = current_champion(world["client"], world["cfg"].model_name)
    other = write_trained(root / "other", "mrpc", MRPC, scale=1.0, seed=1, gain=30.0)
    out["other_outputs"] = model_outputs(other, frame)
    scores = write_scores(root / "scores" / "v1.parquet", frame, out["other_outputs"], MRPC,
                          out["champion"].model_uri)
    challenged = world["evidence"].model_copy(update={"incumbent": out["champion"],
                                                      "scores": scores})
    out["v3"] = register_judged(world, true_report, challenged)
    out["v1_report"] = true_report
    return out


def tags_of(world, number: str) -> dict[str, str]:
    return world["client"].get_model_version(world["cfg"].model_name, number).tags


def test_a_version_that_serves_what_evaluate_computed_faces_the_majority_class(sequence,
                                                                                world):
    v1, cfg, frame = sequence["v1"], world["cfg"], world["frame"]
    majority = constant_outputs(ROWS, MRPC, 0, None)
    expected = gate_on(world["truth"], tsv_outputs(sequence["v1_report"].report_dir), majority,
                       "majority-class predictor", cfg, frame)
    assert expected.code == "promoted" and expected.challenger > 0.7 and expected.incumbent == 0
    assert (v1.code, v1.decision, v1.value) == (expected.code, expected.reason,
                                                expected.challenger)
    assert v1.aliases == ("challenger", "champion") and v1.champion_value == 0.0
    tags = tags_of(world, "1")
    assert {k: tags[k] for k in expected.tags()} == expected.tags()
    assert float(tags["parity.max_abs_difference"]) < 1e-5  # the TSV's 6 decimals, no more
    assert tags["parity.examples"] == str(ROWS) and tags["drop"] == "2026-11-30"
    assert tags["compared_with"] == "majority-class predictor"
    markdown = Path(world["client"].download_artifacts(v1.run_id, DECISION_ARTIFACT)).read_text()
    assert f"Decision `promoted`: {expected.reason}" in markdown
    assert f"Serving: served outputs match evaluate on {ROWS} examples" in markdown


def test_outputs_off_by_a_thousandth_fail_parity_and_move_no_alias(sequence, world):
    v2, after = sequence["v2"], sequence["after_v2"]
    assert (v2.code, v2.promoted, v2.aliases) == ("parity-failed", False, ())
    assert v2.decision.startswith(f"not promoted: parity failed: served outputs differ from "
                                  f"evaluate on {ROWS} examples (max abs difference 0.001 > 1e-05)")
    assert float(tags_of(world, "2")["parity.max_abs_difference"]) == pytest.approx(1e-3,
                                                                                     abs=1e-5)
    assert after["aliases"] == {"challenger": "1", "champion": "1"}
    assert sequence["champion"].version == "1"
    assert (after["tags"][f"{LAST_TAG}.code"], after["tags"][f"{LAST_TAG}.version"]) == (
        "parity-failed", "2")
    assert after["tags"][f"{LAST_TAG}.reason"] == v2.decision


def test_the_champion_is_judged_on_its_own_outputs_and_named(sequence, world):
    v3, cfg, frame, truth = sequence["v3"], world["cfg"], world["frame"], world["truth"]
    other = sequence["other_outputs"]
    expected = gate_on(truth, tsv_outputs(sequence["v1_report"].report_dir), other,
                       "champion v1", cfg, frame)
    assert (v3.code, v3.decision) == (expected.code, expected.reason)
    assert "champion v1" in v3.decision
    assert v3.champion_value == metric_value("f1", truth, other, MRPC, 1) != 0.0
    tags = tags_of(world, "3")
    assert tags["compared_with"] == "champion v1" and tags["gate.incumbent_name"] == "champion v1"
    aliases = {k: str(v) for k, v in world["client"].get_registered_model(
        cfg.model_name).aliases.items()}
    assert aliases == {"challenger": "3", "champion": "3" if expected.promoted else "1"}
