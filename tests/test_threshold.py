"""The threshold benchmark continues unfinished runs from their checkpoints and leaves finished ones alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from experiment.benchmarks.threshold import first_reaching, main
from experiment.plot import load_run_curves


def _benchmark(workdir: Path, max_steps: int, threshold: float) -> list[str]:
    return [
        "--group",
        "sac",
        "algorithm.learner.learning_starts=100",
        "n_test_rollouts=2",
        "env_subprocess=false",
        "--seeds",
        "0",
        "--threshold",
        str(threshold),
        "--eval-every",
        "200",
        "--max-steps",
        str(max_steps),
        "--save-model-freq",
        "1",
        "--workdir",
        str(workdir),
        "--experiment",
        "continued",
    ]


def _runs(store: str) -> list:
    client = MlflowClient(store)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_a_longer_budget_continues_the_run_and_a_finished_run_is_not_trained_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # A threshold above 1 is never reached: each call trains to the end of its budget.
    assert main(_benchmark(tmp_path, 400, 1.1)) == 0
    first = capsys.readouterr().out
    assert "| sac | 0 | not reached |" in first
    (short,) = load_run_curves(store, "test/success_rate", "steps", ["seed"])
    assert list(short.x) == [200, 400]

    assert main(_benchmark(tmp_path, 800, 1.1)) == 0
    second = capsys.readouterr().out
    assert "continuing" in second and "from 400 env steps" in second
    assert len(_runs(store)) == 2
    # One curve: the resumed run's, which starts with the first run's epochs.
    (whole,) = load_run_curves(store, "test/success_rate", "steps", ["seed"])
    assert list(whole.x) == [200, 400, 600, 800]
    assert list(whole.y[:2]) == list(short.y)

    # The budget is spent: the same command trains nothing and reports the same curve.
    assert main(_benchmark(tmp_path, 800, 1.1)) == 0
    third = capsys.readouterr().out
    assert len(_runs(store)) == 2
    row = next(line for line in second.splitlines() if line.startswith("| sac | 0 |"))
    assert row in third.splitlines()


def test_first_reaching_reads_steps_and_wall_seconds_of_the_first_epoch_at_the_threshold() -> None:
    history = {
        "test/success_rate": [0.0, 0.5, 0.9, 1.0],
        "time/total_timesteps": [100.0, 200.0, 300.0, 400.0],
        "time/wall_seconds": [1.0, 2.0, 3.5, 5.0],
    }
    assert first_reaching(history, 0.9) == (300, 3.5)
    assert first_reaching(history, 1.1) == (None, None)
