"""Serving parity: a new version, loaded fresh from the registry in a new process through its
pyfunc as a server would load it, must answer the raw evaluation texts with the probabilities
(or scores) the evaluate stage computed, before any alias moves to it.

A calibrated classifier serves softmax(logits / T) (tasks/calibration.py), and the two are
compared where the 6 decimals of dev_predictions.tsv stay within the tolerance: with T > 1 the
served answers with T undone (softmax(T log q), exact in float64; p^(1/T) of a probability
printed as 0.000000 would be off by far more), with T < 1 evaluate's with T applied (which
scales the TSV's rounding by at most 1/T). A model serving another temperature, or none, differs.

    python -m tasks.parity MODEL_URI TRACKING_URI EXAMPLES.parquet LABELS_JSON OUT.npy
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.calibration import calibrated
from tasks.mlflow_store import using_tracking_uri


@dataclass(frozen=True)
class Parity:
    max_abs_difference: float
    tolerance: float
    examples: int

    @property
    def ok(self) -> bool:
        return self.max_abs_difference <= self.tolerance

    @property
    def line(self) -> str:
        """
        >>> Parity(2e-7, 1e-5, 408).line
        'served outputs match evaluate on 408 examples (max abs difference 2e-07 <= 1e-05)'
        """
        verdict = "match" if self.ok else "differ from"
        sign = "<=" if self.ok else ">"
        return (f"served outputs {verdict} evaluate on {self.examples} examples (max abs "
                f"difference {self.max_abs_difference:.2g} {sign} {self.tolerance:.2g})")


def evaluated_outputs(report_dir: str, guids: list[str], labels: tuple[str, ...]) -> np.ndarray:
    """Evaluate's outputs for `guids`, from its dev_predictions.tsv (p_<label>... or score)."""
    frame = pd.read_csv(Path(report_dir) / "dev_predictions.tsv", sep="\t", dtype={"guid": str},
                        keep_default_na=False, quoting=3)
    columns = [f"p_{label}" for label in labels] or ["score"]
    values = frame.set_index("guid").loc[guids, columns].to_numpy(np.float64)
    return values if labels else values[:, 0]


def served_in_new_process(model_uri: str, tracking_uri: str, examples: str,
                          labels: tuple[str, ...], timeout_s: float = 600) -> np.ndarray:
    """The outputs of `model_uri` on the examples, from a fresh Python process."""
    with tempfile.TemporaryDirectory(prefix="bertflow-parity-") as tmp:
        out = Path(tmp) / "outputs.npy"
        done = subprocess.run([sys.executable, "-m", "tasks.parity", model_uri, tracking_uri,
                               examples, json.dumps(list(labels)), str(out)],
                              capture_output=True, text=True, timeout=timeout_s,
                              cwd=Path(__file__).resolve().parents[1])
        if done.returncode != 0:
            raise RuntimeError(f"serving {model_uri} in a new process failed:\n"
                               f"{done.stderr[-3000:]}")
        return np.load(out)


def comparable(served: np.ndarray, expected: np.ndarray, temperature: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Served probabilities at `temperature` and evaluate's, in the space where the TSV's
    rounding does not grow (see the module docstring).

    >>> p = np.array([[0.2, 0.8]])
    >>> served, expected = comparable(calibrated(p, 2.0), p, 2.0)
    >>> bool(np.abs(served - expected).max() < 1e-12)
    True
    """
    if temperature > 1:
        return calibrated(served, 1 / temperature, floor=0), expected
    if temperature < 1:
        return served, calibrated(expected, temperature)
    return served, expected


def check_parity(model_uri: str, tracking_uri: str, examples: str, report_dir: str,
                 labels: tuple[str, ...], tolerance: float, temperature: float = 1.0) -> Parity:
    """How far the served version's outputs, at `temperature` (that of its model_config.json),
    are from evaluate's on the evaluation set."""
    guids = pd.read_parquet(examples, columns=["guid"])["guid"].astype(str).tolist()
    served = served_in_new_process(model_uri, tracking_uri, examples, labels)
    expected = evaluated_outputs(report_dir, guids, labels)
    if labels and len(guids):
        served, expected = comparable(served, expected, temperature)
    difference = float(np.max(np.abs(served - expected))) if len(guids) else 0.0
    return Parity(difference, tolerance, len(guids))


def main(argv: list[str]) -> None:
    import mlflow

    from tasks.incumbent import served_outputs

    model_uri, tracking_uri, examples, labels, out = argv
    with using_tracking_uri(tracking_uri):
        model = mlflow.pyfunc.load_model(model_uri)
    outputs = served_outputs(model, pd.read_parquet(examples), tuple(json.loads(labels)))
    np.save(out, outputs)


if __name__ == "__main__":
    main(sys.argv[1:])
