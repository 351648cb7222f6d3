"""train(cfg) end to end: every algorithm config learns, the MLflow contract holds, runs are reproducible."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from experiment.train import train
from interface.algorithms import ALGORITHMS
from interface.envs import make_vec_env
from tests.conftest import TINY

CONTRACT_METRICS = (
    "test/success_rate",
    "test/mean_reward",
    "test/ep_length",
    "train/success_rate",
    "train/mean_reward",
    "time/total_timesteps",
    "time/fps",
    "time/epoch",
)


def _runs_with_tag(tracking_uri: str, key: str, value: str):
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client, client.search_runs(experiments, filter_string=f"tags.{key} = '{value}'")


@pytest.mark.parametrize(
    "overrides",
    [
        ["algorithm=her", "algorithm.model_class=sac"],
        ["algorithm=her", "algorithm.model_class=td3"],
        ["algorithm=her", "algorithm.model_class=ddpg"],
        ["algorithm=her", "algorithm.model_class=dqn", "env=BitFlipping-v0"],
        ["algorithm=her", "algorithm.goal_selection_strategy=final", "algorithm.n_sampled_goal=2"],
        ["algorithm=sac"],
        ["algorithm=td3"],
        ["algorithm=ddpg"],
        ["algorithm=dqn", "env=BitFlipping-v0"],
        ["algorithm=ppo", "algorithm.learner.n_steps=128", "algorithm.learner.batch_size=32"],
    ],
    ids=lambda o: "-".join(x.split("=")[1] for x in o),
)
def test_every_algorithm_config_learns(make_cfg, overrides: list[str], tracking_uri: str, tmp_path: Path) -> None:
    learning_starts = [] if "algorithm=ppo" in overrides else ["algorithm.learner.learning_starts=100"]
    cfg = make_cfg(*TINY, *learning_starts, *overrides)
    run_dir = tmp_path / "run"
    score = train(cfg, run_dir=run_dir)
    assert math.isfinite(score) and 0.0 <= score <= 2.0
    client, runs = _runs_with_tag(tracking_uri, "run_dir", str(run_dir.resolve()))
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    steps = [m.step for m in client.get_metric_history(run_id, "time/total_timesteps")]
    assert len(steps) == 2 and steps[0] >= 200 and steps[1] > steps[0]
    if "algorithm=ppo" not in overrides:
        assert steps == [200, 400]
        # Gradient steps happened: SB3's own loss names arrive under train/.
        assert any(key.startswith("train/") and "loss" in key for key in runs[0].data.metrics)
    assert (run_dir / "checkpoint" / "model.zip").exists()


def test_mlflow_run_carries_the_contract(make_cfg, tracking_uri: str, tmp_path: Path) -> None:
    cfg = make_cfg(*TINY, "algorithm.learner.learning_starts=100", "n_epochs=3")
    run_dir = tmp_path / "run"
    score = train(cfg, run_dir=run_dir)
    client, runs = _runs_with_tag(tracking_uri, "run_dir", str(run_dir.resolve()))
    (run,) = runs
    assert run.info.status == "FINISHED"
    assert run.data.tags["env"] == "FetchReach-v4"
    assert run.data.tags["algorithm"] == "her"
    assert run.data.tags["git_commit"]
    for name in CONTRACT_METRICS:
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [200, 400, 600], name
    epochs = [m.value for m in client.get_metric_history(run.info.run_id, "time/epoch")]
    assert epochs == [1, 2, 3]
    assert run.data.metrics["hyperopt/score"] == pytest.approx(score)
    assert run.data.params["algorithm.model_class"] == "sac"
    assert run.data.params["algorithm.learner.gamma"] == "0.95"
    assert run.data.params["n_epochs"] == "3"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "train.log", "model"} <= artifacts
    assert "epoch 3" in (run_dir / "train.log").read_text()


def test_same_seed_gives_identical_metric_histories(make_cfg, tracking_uri: str, tmp_path: Path) -> None:
    histories = []
    for attempt in range(2):
        cfg = make_cfg(*TINY, "algorithm.learner.learning_starts=100", "seed=3")
        run_dir = tmp_path / f"run{attempt}"
        train(cfg, run_dir=run_dir)
        client, (run,) = _runs_with_tag(tracking_uri, "run_dir", str(run_dir.resolve()))
        histories.append(
            {
                key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
                for key in run.data.metrics
                if not key.startswith("time/")
            }
        )
    assert histories[0] == histories[1]
    assert any(key.startswith("train/") and "loss" in key for key in histories[0])


def test_early_stop_ends_training_when_the_threshold_is_reached(make_cfg, tmp_path: Path) -> None:
    # test/ep_length is always 50 on FetchReach: a threshold of 50 over the last 2 epochs stops after epoch 2.
    cfg = make_cfg(
        *TINY, "n_epochs=6", "early_stop_data_column=test/ep_length", "early_stop_threshold=50", "early_stop_last_n=2"
    )
    train(cfg, run_dir=tmp_path / "run")
    log = (tmp_path / "run" / "train.log").read_text()
    assert "epoch 2 " in log and "epoch 3 " not in log


@pytest.mark.parametrize(
    "key,overrides,layers_expected",
    [
        ("target_entropy", ["algorithm=her"], [-4.0]),
        ("target_entropy", ["algorithm=her", "algorithm.per_model_class.sac.target_entropy=-2"], [-2.0]),
        (
            "target_entropy",
            ["algorithm=her", "algorithm.model_class=tqc", "algorithm.per_model_class.tqc.target_entropy=-1.5"],
            [-1.5],
        ),
        ("target_entropy", ["algorithm=sac", "algorithm.learner.target_entropy=-3"], [-3.0]),
        ("target_entropy", ["algorithm=hac", "algorithm.per_model_class.sac.target_entropy=-2"], [-2.0, -2.0]),
        ("target_entropy", ["algorithm=hac"], [-4.0, -3.0]),  # auto: minus each layer's action size (env 4, subgoal 3)
        ("random_action_prob", ["algorithm=her"], [0.0]),
        ("random_action_prob", ["algorithm=her", "algorithm.per_model_class.sac.random_action_prob=0.3"], [0.3]),
        ("random_action_prob", ["algorithm=sac", "algorithm.learner.random_action_prob=0.2"], [0.2]),
        (
            "random_action_prob",
            ["algorithm=hac", "algorithm.per_model_class.sac.random_action_prob=0.25"],
            [0.25, 0.25],
        ),
    ],
)
def test_exploration_keys_reach_every_learner_they_tune(
    make_cfg, key: str, overrides: list[str], layers_expected: list[float]
) -> None:
    cfg = make_cfg("env=FetchReach-v4", *overrides)
    env = make_vec_env("FetchReach-v4", {}, seed=0, normalize_obs=False, subprocess=False)
    try:
        model = ALGORITHMS[cfg.algorithm.name].build(cfg.algorithm, env, 0, "cpu")
        learners = getattr(model, "learners", [model])
        assert [float(getattr(learner, key)) for learner in learners] == layers_expected
    finally:
        env.close()
