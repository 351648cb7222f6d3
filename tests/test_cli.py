"""The command line as a user meets it: bad input exits 2 with one line, Ctrl-C checkpoints, restore resumes."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from stable_baselines3 import PPO

from experiment.cli import command_line_problem, config_groups
from experiment.epoch_loop import steps_per_epoch
from experiment.plot import load_run_curves
from interface.learners import HER_MODEL_CLASSES
from tests.conftest import PROJECT_ROOT, TINY, interrupt_train_cli, run_train_cli
from util.callbacks import ProgressBar

# `{corrupt_run}` is a run directory whose checkpoint/model.zip is garbage, `{closed_port}` a port nobody serves.
BAD_INPUT = [
    (["env=NoSuchEnv-v0"], "env: unknown env id 'NoSuchEnv-v0'"),
    (["env=FetchReac-v4"], "did you mean: FetchReach-v4"),
    (["env=FetchReach-v1"], "needs mujoco-py"),
    (["algorithm=nope"], f"algorithm: unknown option 'nope' (allowed: {', '.join(config_groups()['algorithm'])})"),
    (
        ["algorithm.model_class=ppo"],
        f"algorithm.model_class: unknown value 'ppo' (allowed: {', '.join(HER_MODEL_CLASSES)})",
    ),
    (["env=CartPole-v1"], "env: algorithm=her needs a goal env"),
    (["n_epochs=0"], "n_epochs: must be an integer >= 1, got 0"),
    (["eval_after_n_steps=-5"], "eval_after_n_steps: must be an integer >= 1"),
    (["n_test_rollouts=0"], "n_test_rollouts: must be an integer >= 1"),
    (["env=no_such_module_xyz:Thing-v0"], "env: module 'no_such_module_xyz' of env=no_such_module_xyz:Thing-v0 failed"),
    (["no_such_key=1"], "no_such_key: unknown config key (allowed top-level keys:"),
    (["env_subprocess=sometimes"], "env_subprocess: unknown value 'sometimes' (allowed: auto, true, false)"),
    (["algorithm.obs_std_floor=-0.1"], "algorithm.obs_std_floor: must be a number >= 0, got -0.1"),
    (
        ["algorithm.per_model_class.sac.random_action_prob=1.5"],
        "algorithm.per_model_class.sac.random_action_prob: must be a number in [0, 1], got 1.5",
    ),
    (
        ["algorithm=hac", "algorithm.per_layer=[{},{random_action_prob:-0.2}]"],
        "algorithm.per_layer.1.random_action_prob: must be a number in [0, 1], got -0.2",
    ),
    # Mistakes Hydra itself refuses, which it reports in several lines with exit 1
    (["n_epoch=2"], "n_epoch: unknown config key, did you mean n_epochs? (allowed top-level keys:"),
    (
        ["algorithm.learner.batchsize=512"],
        "algorithm.learner.batchsize: unknown config key, did you mean algorithm.learner.batch_size? (keys of algorithm.learner in conf/algorithm/her.yaml: batch_size,",
    ),
    (
        ["algorithm=hac", "algorithm.time_scale=[5,-1]"],
        "did you mean algorithm.time_scales? (keys of algorithm in conf/algorithm/hac.yaml:",
    ),
    (["hydra.sweeper.n_trail=3"], "hydra.sweeper.n_trail: unknown config key, did you mean hydra.sweeper.n_trials?"),
    (
        ["env_kwargs.reward_type=dense"],
        "env_kwargs.reward_type: env_kwargs is empty; add a key with +env_kwargs.reward_type=dense",
    ),
    (
        ["tuned=AntReacher-v1"],
        "tuned: a preset is added with a leading '+': write +tuned=AntReacher-v1 (presets in conf/tuned/: Ant4Rooms-v1, AntReacher-v1,",
    ),
    (
        ["tuned=NoSuchPreset-v0"],
        "tuned: a preset is added with a leading '+' (+tuned=<preset>), and 'NoSuchPreset-v0' is not one of them (presets in conf/tuned/:",
    ),
    (
        ["+tuned=NoSuchPreset-v0"],
        f"tuned: unknown option 'NoSuchPreset-v0' (allowed: {', '.join(config_groups()['tuned'])})",
    ),
    (["seed=[1,2"], "seed: cannot parse override 'seed=[1,2'"),
    (["algorithm=her,sac"], "algorithm: algorithm=her,sac is a sweep, which needs --multirun"),
    (["seed=${sed}"], "seed: Interpolation key 'sed' not found"),
    # Values that only the env or the learner can judge
    (["algorithm=hac", "algorithm.time_scales=[0,-1]"], "algorithm.time_scales: entries must be integers >= 1 or -1"),
    (["algorithm=hac", "algorithm.time_scales=[5,-3]"], "algorithm.time_scales: entries must be integers >= 1 or -1"),
    (
        ["algorithm=hac", "algorithm.subgoal_test_perc=1.5"],
        "algorithm.subgoal_test_perc: must be a probability in [0, 1], got 1.5",
    ),
    (
        ["algorithm=hac", "algorithm.subgoal_test_perc=-0.1"],
        "algorithm.subgoal_test_perc: must be a probability in [0, 1]",
    ),
    (["render_freq=0"], "render_freq: must be an integer >= 1, got 0"),
    (["grasped_start_prob=1.5"], "grasped_start_prob: must be a number in [0, 1], got 1.5"),
    (["scripted_start_prob=-0.5"], "scripted_start_prob: must be a number in [0, 1], got -0.5"),
    (
        ["env=FetchPush-v4", "scripted_start_prob=0.5"],
        "scripted_start_prob: FetchPush-v4 has no scripted solver",
    ),
    (
        ["env=FetchPush-v4", "grasped_start_prob=0.5"],
        "grasped_start_prob: FetchPush-v4 has no object to hold or no gripper that opens",
    ),
    (
        ["env=tests.goal_env_faults:ScalarReward-v0", "algorithm.model_class=dqn"],
        "env: ScalarReward-v0.compute_reward answered a batch of 4 goal pairs with shape (); it must be vectorised",
    ),
    (
        ["env=tests.goal_env_faults:ColumnReward-v0", "algorithm.model_class=dqn"],
        "env: ColumnReward-v0.compute_reward answered a batch of 4 goal pairs with shape (4, 1); it must be vectorised",
    ),
    (
        ["env=tests.goal_env_faults:NoComputeReward-v0", "algorithm.model_class=dqn"],
        "env: algorithm=her needs the goal env method compute_reward(achieved_goal, desired_goal, info)",
    ),
    (
        ["algorithm=hac", "env=tests.goal_env_faults:NoComputeReward-v0"],
        "env: algorithm=hac needs the goal env method compute_reward",
    ),
    (["restore_from={corrupt_run}"], "restore_from: the checkpoint in {corrupt_run}/checkpoint does not load"),
    (
        ["mlflow.tracking_uri=http://127.0.0.1:{closed_port}"],
        "mlflow.tracking_uri: no MLflow tracking server answers at http://127.0.0.1:{closed_port}",
    ),
]


def _corrupt_run(folder: Path) -> Path:
    """A run directory as training leaves it, but with a damaged checkpoint/model.zip."""
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("main")
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    state = {"epoch": 1, "env_steps": 200, "history": {}, "wall_seconds": 1.0, "early_stopped": False}
    (folder / "checkpoint" / "state.json").write_text(json.dumps(state))
    (folder / "checkpoint" / "model.zip").write_bytes(b"not a zip file")
    return folder


def _fill(text: str, slots: dict[str, str]) -> str:
    for name, value in slots.items():
        text = text.replace(f"{{{name}}}", value)
    return text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once the socket closes: nothing listens there


@pytest.mark.parametrize("args,message", BAD_INPUT, ids=[" ".join(a[0]) for a in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(args: list[str], message: str, tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    slots = {"corrupt_run": "", "closed_port": ""}
    if any("{corrupt_run}" in arg for arg in args):
        slots["corrupt_run"] = str(_corrupt_run(tmp_path / "corrupt_run"))
    if any("{closed_port}" in arg for arg in args):
        slots["closed_port"] = str(_closed_port())
    started = time.time()
    result = run_train_cli(
        f"base_logdir={tmp_path / 'data'}",
        f"mlflow.tracking_uri=sqlite:///{store}",
        "comet.mode=off",
        *(_fill(arg, slots) for arg in args),
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and _fill(message, slots) in lines[0]
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*"))
    assert not store.exists()  # no MLflow run was even started
    assert time.time() - started < 120  # an unreachable tracking server fails at once, not after minutes of retries


def test_unknown_keys_are_found_before_hydra_runs() -> None:
    assert command_line_problem(["--multirun", "seed=1", "algorithm=sac", "algorithm.learner.gamma=0.9"]) is None
    assert command_line_problem(["--multirun", "+extra=1", "hydra.run.dir=x", "algorithm=her,sac"]) is None
    assert command_line_problem(["+tuned=PointMaze_Medium-v3", "algorithm.time_scales=[10,-1]"]) is None
    assert command_line_problem(["--help"]) is None
    assert "unknown config key, did you mean seed?" in command_line_problem(["sede=1"])
    assert "unknown option 'hc', did you mean hac?" in command_line_problem(["algorithm=hc"])


@pytest.mark.parametrize(
    "args,message",
    [
        # nested keys are checked against the chosen group's yaml (a preset can choose it)
        (
            ["algorithm=hac", "algorithm.time_scale=[5,-1]"],
            "did you mean algorithm.time_scales? (keys of algorithm in conf/algorithm/hac.yaml:",
        ),
        (["+tuned=PointMaze_Large-v3", "algorithm.dense_hindsigt=true"], "conf/algorithm/hac.yaml"),
        (["algorithm.per_model_class.sac.ent_coeff=0.1"], "did you mean algorithm.per_model_class.sac.ent_coef?"),
        (["--multirun", "algorithm.learner.batchsize=128,256"], "did you mean algorithm.learner.batch_size?"),
        (["hydra.sweeper.n_trail=3"], "did you mean hydra.sweeper.n_trials? (keys of hydra.sweeper:"),
        (
            ["hydra/launcher=submitit_locl"],
            "hydra/launcher: unknown option 'submitit_locl', did you mean submitit_local?",
        ),
        (["+tuned=PointMaze_Lage-v3"], "did you mean PointMaze_Large-v3?"),
        (["tuned=AntReacher-v1"], "write +tuned=AntReacher-v1 (presets in conf/tuned/:"),
        (["seed=${sed}"], "seed: Interpolation key 'sed' not found"),
        (["seed.x=1"], "seed.x: seed is a single value (0), it has no key 'x'"),
    ],
)
def test_hydra_level_mistakes_become_one_line(args: list[str], message: str) -> None:
    problem = command_line_problem(args)
    assert problem is not None and message in problem
    assert "\n" not in problem


def _wait_for(predicate, timeout: float) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise TimeoutError
        time.sleep(0.2)


def test_interrupt_writes_a_checkpoint_and_restore_continues(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [*TINY, "algorithm.learner.learning_starts=100", f"mlflow.tracking_uri={store}", "save_model_freq=0"]
    run_dir = tmp_path / "first"
    state = interrupt_train_cli(*common, "n_epochs=100", run_dir=run_dir, cwd=tmp_path, after_epoch=2)
    assert state["epoch"] >= 2
    # Interrupted during epoch 3 or later: the checkpoint holds every env step taken, finished epoch or not.
    saved_steps = state["env_steps"]
    assert saved_steps >= state["history"]["time/total_timesteps"][-1] == state["epoch"] * 200

    client = MlflowClient(store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (killed,) = client.search_runs(experiments, filter_string=f"tags.run_dir = '{run_dir.resolve()}'")
    assert killed.info.status == "KILLED"

    resumed_dir = tmp_path / "resumed"
    result = run_train_cli(
        *common,
        f"n_epochs={state['epoch'] + 2}",
        f"restore_from={run_dir}",
        f"hydra.run.dir={resumed_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"resumed from {run_dir.resolve()}: {saved_steps:,} env steps, {state['epoch']} epochs done" in result.stdout
    (resumed,) = client.search_runs(experiments, filter_string=f"tags.run_dir = '{resumed_dir.resolve()}'")
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["restored_from"] == str(run_dir.resolve())
    # The resumed run logs the curve it continues (the checkpoint's epochs at their env steps), then its own.
    restored_steps = [int(step) for step in state["history"]["time/total_timesteps"]]
    steps = sorted(m.step for m in client.get_metric_history(resumed.info.run_id, "time/total_timesteps"))
    assert steps == [*restored_steps, saved_steps + 200, saved_steps + 400]
    epochs = sorted(m.value for m in client.get_metric_history(resumed.info.run_id, "time/epoch"))
    assert epochs == [*range(1, state["epoch"] + 3)]
    restored_success = state["history"]["test/success_rate"]
    success = sorted(client.get_metric_history(resumed.info.run_id, "test/success_rate"), key=lambda m: m.step)
    assert [m.value for m in success[: len(restored_success)]] == restored_success
    # plot.py draws the two runs as one curve: the resumed run's, which holds the killed run's epochs.
    (curve,) = load_run_curves(store, "test/success_rate", "steps", ["seed"])
    assert curve.run_id == resumed.info.run_id
    assert list(curve.x) == [*restored_steps, saved_steps + 200, saved_steps + 400]


# The README's custom-env example: a goal env in the folder training runs from, registered on import.
MY_ENVS = '''
import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ReachEnv(gym.Env):
    """A point in the unit square moving towards a goal; reward 0 within 0.1 of it, else -1."""

    def __init__(self):
        box = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = spaces.Dict({"observation": box, "achieved_goal": box, "desired_goal": box})
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def _obs(self):
        return {"observation": self.pos.copy(), "achieved_goal": self.pos.copy(), "desired_goal": self.goal.copy()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = np.zeros(2, dtype=np.float32)
        self.goal = self.np_random.uniform(-1, 1, size=2).astype(np.float32)
        return self._obs(), {}

    def step(self, action):
        self.pos = np.clip(self.pos + 0.1 * np.asarray(action, dtype=np.float32), -1, 1)
        reward = float(self.compute_reward(self.pos, self.goal, {}))
        return self._obs(), reward, False, False, {"is_success": float(reward == 0.0)}

    def compute_reward(self, achieved_goal, desired_goal, info):
        return -(np.linalg.norm(achieved_goal - desired_goal, axis=-1) > 0.1).astype(np.float32)


gym.register(id="Reach-v0", entry_point="my_envs:ReachEnv", max_episode_steps=20)
'''


def test_env_module_in_the_working_directory_is_found(tmp_path: Path) -> None:
    (tmp_path / "my_envs.py").write_text(MY_ENVS)
    result = run_train_cli(
        "env=my_envs:Reach-v0",
        "n_epochs=1",
        "eval_after_n_steps=200",
        "n_test_rollouts=2",
        "progress_bar=false",
        "algorithm.learner.learning_starts=100",
        "comet.mode=off",
        "env_subprocess=true",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "mlflow.db").exists()  # MLflow's default store, in the folder training ran from


FINAL_LINE = re.compile(
    r"done \(1 epoch\): test/success_rate (?P<success>\d\.\d\d) after 200 env steps, \d+\.\d s; "
    r"run dir (?P<run_dir>data/\S+); "
    r"mlflow ui: http://127\.0\.0\.1:5000/#/experiments/(?P<experiment>\d+)/runs/(?P<run>[0-9a-f]{32})"
    r"\?workflowType=machine_learning$"
)


def test_last_console_line_says_what_the_run_reached_and_where_to_look(tmp_path: Path) -> None:
    # Comet writes an offline archive (no API key under this HOME): its own messages must not follow the line.
    result = run_train_cli(
        *TINY,
        "n_epochs=1",
        "algorithm.learner.learning_starts=100",
        "comet.mode=offline",
        "progress_bar=true",
        cwd=tmp_path,
        env={"HOME": str(tmp_path), "COMET_API_KEY": ""},
        merge_stderr=True,
    )
    assert result.returncode == 0, result.stdout
    last = result.stdout.strip().splitlines()[-1]
    match = FINAL_LINE.search(last)
    assert match, result.stdout
    assert (tmp_path / match["run_dir"] / "comet").is_dir()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(match["run"])
    assert run.info.experiment_id == match["experiment"]
    assert run.data.metrics["test/success_rate"] == pytest.approx(float(match["success"]), abs=0.005)
    assert "COMET INFO" not in result.stdout


def test_progress_bar_rate_and_total_on_a_short_run() -> None:
    bar = ProgressBar(total_steps=500, enabled=False)
    time.sleep(0.05)
    bar.update(1024)  # an on-policy learner finishing its first rollout past the budget
    task = bar.progress.tasks[0]
    assert task.total == 1024 and task.completed == 1024
    assert task.fields["fps"] > 0  # the rate since the start, before any one-second window has passed


def test_an_epoch_of_an_on_policy_learner_is_whole_rollouts() -> None:
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=1024, device="cpu")
    assert steps_per_epoch(model, 500) == 1024
    assert steps_per_epoch(model, 1024) == 1024
    assert steps_per_epoch(model, 1025) == 2048
