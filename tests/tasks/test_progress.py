"""Training progress as a person sees it: log lines with step, percent, loss, learning rate,
speed and time left; a bar on a terminal; and the Prefect UI's progress artifact."""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest

from bert_core.callbacks import StopAtStep, TrainingProgress
from bert_core.progress import Meter, progress_line


def _fit(steps: int, **progress) -> tuple[list[str], TrainingProgress]:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    lines: list[str] = []
    callback = TrainingProgress(steps, batch_size=2, log=lines.append, **progress)
    model.fit(np.zeros((2 * steps, 2)), np.ones((2 * steps, 1)), batch_size=2, verbose=0,
              callbacks=[StopAtStep(steps), callback])
    return lines, callback


def test_a_line_every_n_steps_and_at_the_last_one():
    lines, _ = _fit(25, every=10, stream=io.StringIO())
    assert [line.split(",")[0] for line in lines] == ["step 10/25 (40%)", "step 20/25 (80%)",
                                                      "step 25/25 (100%)"]
    for line in lines:
        _, loss, lr, speed, eta = line.split(", ")
        assert loss.startswith("loss ") and float(loss[5:]) > 0
        assert lr == "lr 0.01"
        assert speed.endswith(" examples/s") and float(speed.split()[0]) > 0
        assert eta.startswith("ETA ")
    assert lines[-1].endswith("ETA 0s")


def test_the_progress_artifact_moves_with_the_lines():
    reports: list[tuple[float, str]] = []
    lines, _ = _fit(20, every=5, report=lambda p, line: reports.append((p, line)),
                    stream=io.StringIO())
    assert [p for p, _ in reports] == [25.0, 50.0, 75.0, 100.0]
    assert [line for _, line in reports] == lines


def test_a_terminal_gets_a_bar_redrawn_each_step():
    stream = io.StringIO()
    _fit(4, every=10, stream=stream)
    frames = stream.getvalue().split("\r\x1b[K")
    bars = [f for f in frames if f.startswith("[")]
    assert len(bars) == 4 and bars[-1].startswith("[" + "#" * 24 + "] step 4/4 (100%)")
    assert stream.getvalue().endswith("\n")


def test_no_bar_when_stderr_is_not_a_terminal(capsys):
    _, callback = _fit(2)  # pytest captures stderr: not a TTY
    assert callback.stream is None
    assert "step 2/2" not in capsys.readouterr().err


def test_speed_is_that_of_the_last_window_and_the_eta_follows_it():
    now = [0.0]
    meter = Meter(total=100, done=10, clock=lambda: now[0])
    now[0] = 100.0  # start-up: 10 steps in 100 s
    assert meter.read(20) == (0.1, 800.0)
    now[0] = 110.0  # then 10 steps in 10 s
    assert meter.read(30) == (1.0, 70.0)
    assert progress_line("step", 30, 100, 32.0, 70.0, "examples/s", "loss 0.5") == (
        "step 30/100 (30%), loss 0.5, 32.0 examples/s, ETA 1m10s")


@pytest.mark.usefixtures("prefect_api")
def test_inside_a_task_run_the_ui_shows_a_progress_artifact():
    from prefect import flow, task

    from tasks.progress import task_progress
    from tests.artifacts import flow_artifact

    @task
    def train_a_little() -> None:
        report = task_progress("training-progress", "fine-tune: 6 steps")
        assert report is not None
        _fit(6, every=3, report=report, stream=io.StringIO())

    @flow
    def run() -> str:
        from prefect.runtime import flow_run

        train_a_little()
        return flow_run.id

    assert task_progress("training-progress", "outside a run") is None
    assert flow_artifact(run(), "training-progress") == 100.0
