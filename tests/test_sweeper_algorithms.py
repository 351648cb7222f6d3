"""Every algorithm config sweeps out of the box: `--multirun algorithm=<name>` uses that algorithm's own
default search space (conf/algorithm/<name>.yaml `search_space`), unless the user sets `search_space`.

Each sweep is real (a `train.py --multirun` subprocess) with a tiny budget: 2 trials of one 200-step epoch.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from hydra_plugins.ideas_optuna_sweeper._records import RESULTS_FILE
from hydra_plugins.ideas_optuna_sweeper._task import search_space_entries
from tests.conftest import CONF_DIR
from tests.sweeper_faults import multirun_command

# Overrides per algorithm: a goal env it can run on and a learner that trains within 200 steps.
ALGORITHMS = {
    "her": ["algorithm.learner.learning_starts=50"],
    "hac": ["algorithm.learner.learning_starts=50"],
    "sac": ["algorithm.learner.learning_starts=50"],
    "td3": ["algorithm.learner.learning_starts=50"],
    "ddpg": ["algorithm.learner.learning_starts=50"],
    "dqn": ["env=BitFlipping-v0", "algorithm.learner.learning_starts=50"],
    "ppo": ["algorithm.learner.n_steps=64", "algorithm.learner.batch_size=32"],
    "tqc": ["algorithm.learner.learning_starts=50"],
}
# A user's search space, given on the command line.
GAMMA_SPACE = "search_space={algorithm.learner.gamma: 'choice(0.9, 0.99)'}"
TINY_SWEEP = [
    "n_epochs=1",
    "eval_after_n_steps=200",
    "n_test_rollouts=2",
    "env_subprocess=false",
    "hydra.sweeper.n_trials=2",
    "hydra.sweeper.n_jobs=1",
    "hydra.sweeper.pruner=none",  # both trials run their epoch, whatever the first one scored
    "hydra.sweeper.sampler=random",
    "hydra.sweeper.seed=0",
]


def _sweep(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess, optuna.Study]:
    command, env = multirun_command(tmp, *TINY_SWEEP, *args, "hydra.sweeper.study_name=algo")
    result = subprocess.run(command, check=False, cwd=tmp, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = optuna.load_study(study_name="algo", storage=f"sqlite:///{tmp / 'sweep' / 'optuna.db'}")
    return result, study


def _training_params(tmp: Path) -> dict[int, dict[str, str]]:
    """Trial number -> the MLflow params of the training the trial ran."""
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    trial_numbers = {r.info.run_id: int(r.data.tags["sweep/trial"]) for r in runs if "sweep/trial" in r.data.tags}
    parent = "mlflow.parentRunId"
    return {trial_numbers[r.data.tags[parent]]: r.data.params for r in runs if r.data.tags.get(parent) in trial_numbers}


def _default_space(algorithm: str) -> dict[str, str]:
    entries = OmegaConf.load(CONF_DIR / "algorithm" / f"{algorithm}.yaml").search_space
    return {str(key): str(value) for key, value in entries.items()}


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_sweeps_its_default_search_space(algorithm: str, tmp_path: Path) -> None:
    _, study = _sweep(tmp_path, f"algorithm={algorithm}", *ALGORITHMS[algorithm])
    fixed = {line.split("=", 1)[0] for line in ALGORITHMS[algorithm]}
    swept = set(_default_space(algorithm)) - fixed
    assert len(swept) >= 2
    trials = study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(set(t.params) == swept for t in trials)
    assert OmegaConf.load(tmp_path / "sweep" / RESULTS_FILE).trials == {"COMPLETE": 2}
    trained = _training_params(tmp_path)
    for trial in trials:  # the sampled values reached the training's config
        for key, value in trial.params.items():
            assert trained[trial.number][key] == str(value), key


def test_a_bad_entry_of_the_algorithms_space_is_named_where_it_is_written(tmp_path: Path) -> None:
    command, env = multirun_command(tmp_path, "algorithm=sac", "+algorithm.search_space.x='choice(1, 1)'")
    result = subprocess.run(command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == ["error: algorithm.search_space.x: choice values must be distinct"]


def test_a_user_search_space_replaces_the_algorithms_and_command_line_sweeps_join_it(tmp_path: Path) -> None:
    _, study = _sweep(
        tmp_path,
        "algorithm=dqn",
        *ALGORITHMS["dqn"],
        GAMMA_SPACE,
        "algorithm.learner.batch_size=choice(16, 32)",
    )
    assert [set(t.params) for t in study.trials] == [{"algorithm.learner.gamma", "algorithm.learner.batch_size"}] * 2


@pytest.mark.parametrize(
    ("overrides", "source", "keys"),
    [
        ([], "algorithm.search_space", set(_default_space("her"))),
        (["algorithm=ppo"], "algorithm.search_space", set(_default_space("ppo"))),
        (["algorithm=ppo", GAMMA_SPACE], "search_space", {"algorithm.learner.gamma"}),
        (["algorithm=sac", "+search_space.x=1"], "search_space", {"x"}),
        (["algorithm=sac", "search_space={}"], "search_space", set()),
        (["algorithm=sac", "~search_space"], "search_space", set()),
    ],
)
def test_the_algorithms_space_applies_until_the_user_sets_search_space(
    make_cfg, overrides: list[str], source: str, keys: set[str]
) -> None:
    entries, where = search_space_entries(make_cfg(*overrides))
    assert (set(entries), where) == (keys, source)
