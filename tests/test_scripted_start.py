"""`scripted_start_prob`: training episodes that start part of the way along the scripted solver's path, on the
real envs and through the real learners."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from experiment.train import _make_envs, train
from ideas_envs.hook.hook_env import BLOCK_START
from ideas_envs.scripted_solvers import has_scripted_solver
from ideas_envs.scripted_start import ScriptedStart
from interface.envs import make_env, resolve_env_id
from tests.conftest import TINY
from util.errors import ConfigError

HOOK = "Hook-o1-v1"
HOOK_POSITION = slice(25, 28)  # Hook's observation: gripper (10), block (15), then the hook's position


def _block_pulled(env: gym.Env) -> bool:
    """Whether Hook's block is nearer than its start box: only the hook, pulled, brings it there."""
    return bool(env.unwrapped.block_position()[0] < BLOCK_START[0][0] - 0.05)


def test_our_task_envs_have_a_scripted_solver_and_fetch_tasks_do_not() -> None:
    for env_id in (HOOK, "Blocks-o1-gripper_none-v1", "ButtonUnlock-o1-v1", "AntReacher-v1", "Ant4Rooms-v1"):
        assert has_scripted_solver(gym.make(env_id)), env_id
    assert not has_scripted_solver(gym.make("FetchPush-v4"))
    with pytest.raises(ValueError, match="no scripted solver"):
        ScriptedStart(gym.make("FetchPickAndPlace-v4"), 1.0)


def test_hook_starts_spread_along_the_solution_and_keep_the_step_budget() -> None:
    """From the same seeds, scripted starts have the hook moved, and most have the block already pulled into
    reach; the episode then still runs its whole step limit."""
    plain, scripted = gym.make(HOOK), ScriptedStart(gym.make(HOOK), 1.0)
    hook_moved = pulled = 0
    for seed in range(20):
        task_start = plain.reset(seed=seed)[0]["observation"]
        start = scripted.reset(seed=seed)[0]["observation"]
        hook_moved += np.linalg.norm(start[HOOK_POSITION] - task_start[HOOK_POSITION]) > 0.02
        pulled += _block_pulled(scripted)
        assert not _block_pulled(plain)
    assert hook_moved >= 12 and pulled >= 6
    steps, truncated = 0, False
    while not truncated:
        _, _, terminated, truncated, _ = scripted.step(scripted.action_space.sample())
        steps += 1
    assert steps == scripted.spec.max_episode_steps and not terminated


def test_share_of_scripted_starts_follows_prob_and_zero_is_the_task() -> None:
    plain, never, half = gym.make(HOOK), ScriptedStart(gym.make(HOOK), 0.0), ScriptedStart(gym.make(HOOK), 0.5)
    moved = 0
    for seed in range(40):
        task_start = plain.reset(seed=seed)[0]["observation"]
        np.testing.assert_array_equal(never.reset(seed=seed)[0]["observation"], task_start)
        moved += not np.array_equal(half.reset(seed=seed)[0]["observation"], task_start)
    assert 10 <= moved <= 30


@pytest.mark.parametrize("subprocess", [False, True])
def test_training_env_starts_along_the_solution_and_test_env_starts_as_the_task(make_cfg, subprocess: bool) -> None:
    cfg = make_cfg(f"env={HOOK}", "scripted_start_prob=1.0")
    train_env, eval_env = _make_envs(cfg, resolve_env_id(cfg.env), None, subprocess)
    try:
        hook_starts = {}
        for name, env in (("train", train_env), ("test", eval_env)):
            positions = []
            for _ in range(6):
                env.reset()
                positions.append(env.get_original_obs()["observation"][0][HOOK_POSITION])  # type: ignore[attr-defined]
            hook_starts[name] = np.array(positions)
        # The task lays the hook flat in a 6 cm x 10 cm box on the table; the solver lifts and carries it.
        assert np.ptp(hook_starts["test"][:, 0]) <= 0.06 and np.ptp(hook_starts["test"][:, 1]) <= 0.10
        assert np.ptp(hook_starts["train"], axis=0).max() > 0.1
    finally:
        train_env.close()
        eval_env.close()


@pytest.mark.parametrize("algorithm", ["her_sac", "hac"])
def test_learners_train_with_scripted_starts(make_cfg, tmp_path: Path, algorithm: str) -> None:
    overrides = [f"env={HOOK}", "scripted_start_prob=0.5"]
    if algorithm == "hac":
        overrides.append("algorithm=hac")
    else:
        overrides.append("algorithm.learner.learning_starts=100")
    cfg = make_cfg(*TINY, *overrides)
    assert math.isfinite(train(cfg, run_dir=tmp_path / "run"))


def test_make_env_refuses_scripted_starts_where_there_is_no_solver() -> None:
    with pytest.raises(ConfigError, match="scripted_start_prob: FetchReach-v4 has no scripted solver"):
        make_env("FetchReach-v4", start_probs={"scripted_start_prob": 0.5})
