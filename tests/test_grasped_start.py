"""`grasped_start_prob`: training episodes of FetchPickAndPlace that start with the block held, on the real env."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from experiment.train import _make_envs, train
from ideas_envs.grasped_start import GraspedStart, can_start_grasped
from interface.envs import make_env, resolve_env_id
from tests.conftest import TINY
from util.errors import ConfigError

PNP = "FetchPickAndPlace-v4"
UP_CLOSED = np.array([0.0, 0.0, 1.0, -1.0])


def _block_offset(observation: np.ndarray) -> float:
    """Distance between the grip site and the block (Fetch's observation[6:9] is block minus grip)."""
    return float(np.linalg.norm(observation[6:9]))


def _block_height(observation: np.ndarray) -> float:
    return float(observation[5])


def test_only_fetch_tasks_with_an_opening_gripper_can_start_grasped() -> None:
    assert can_start_grasped(gym.make(PNP))
    assert not can_start_grasped(gym.make("FetchPush-v4"))  # its gripper is blocked
    assert not can_start_grasped(gym.make("FetchReach-v4"))  # no object
    assert can_start_grasped(gym.make("Hook-o1-v1"))  # declares its hook
    assert not can_start_grasped(gym.make("Blocks-o1-gripper_none-v1"))
    with pytest.raises(ValueError, match="no object to hold or no gripper"):
        GraspedStart(gym.make("FetchSlide-v4"), 1.0)


def test_grasped_start_holds_the_block_lifts_it_and_keeps_the_step_budget() -> None:
    env = GraspedStart(gym.make(PNP), 1.0)
    obs, _ = env.reset(seed=3)
    start = obs["observation"]
    assert _block_offset(start) < 0.03
    fingers = start[9:11]
    assert np.all(fingers > 0.015) and np.all(fingers < 0.035)  # closed on the 5 cm block, not on nothing
    np.testing.assert_allclose(obs["achieved_goal"], start[3:6])
    steps, truncated = 0, False
    while not truncated:
        obs, _, terminated, truncated, _ = env.step(UP_CLOSED)
        steps += 1
        if steps == 10:
            assert _block_height(obs["observation"]) > _block_height(start) + 0.05  # carried up with the gripper
            assert _block_offset(obs["observation"]) < 0.03
    assert steps == env.spec.max_episode_steps and not terminated


def test_hook_starts_held_at_its_grasp_place_and_random_sweeps_then_move_the_block() -> None:
    """Held, the hook is carried up with the gripper, and random sweeps with it move the out-of-reach block."""
    env = GraspedStart(gym.make("Hook-o1-v1"), 1.0)
    moved = 0
    for episode in range(12):
        obs, _ = env.reset(seed=episode)
        base = env.unwrapped
        assert np.linalg.norm(base.site_position("hook_grasp") - base.grip_position()) < 0.01
        hook_start, block_start = base.site_position("hook"), base.block_position()
        if episode == 0:
            for _ in range(5):
                env.step(UP_CLOSED)
            assert base.site_position("hook")[2] > hook_start[2] + 0.1
            continue
        rng = np.random.default_rng(episode)
        for _ in range(150):
            env.step(np.append(rng.uniform(-1, 1, 3), -1.0))
        moved += np.linalg.norm(base.block_position() - block_start) > 0.02
    assert moved >= 1


def test_share_of_grasped_starts_follows_prob_and_zero_is_the_task() -> None:
    plain, never = gym.make(PNP), GraspedStart(gym.make(PNP), 0.0)
    for seed in range(3):
        np.testing.assert_array_equal(
            plain.reset(seed=seed)[0]["observation"], never.reset(seed=seed)[0]["observation"]
        )
    half = GraspedStart(gym.make(PNP), 0.5)
    half.reset(seed=0)
    grasped = sum(_block_offset(half.reset()[0]["observation"]) < 0.03 for _ in range(60))
    assert 15 <= grasped <= 45  # the task's own start puts the block >= 10 cm from the gripper


@pytest.mark.parametrize("subprocess", [False, True])
def test_training_env_starts_grasped_and_test_env_starts_as_the_task(make_cfg, subprocess: bool) -> None:
    cfg = make_cfg(f"env={PNP}", "grasped_start_prob=1.0")
    train_env, eval_env = _make_envs(cfg, resolve_env_id(cfg.env), None, subprocess)
    try:
        for env in (train_env, eval_env):
            env.reset()
        train_obs = train_env.get_original_obs()["observation"][0]  # type: ignore[attr-defined]
        eval_obs = eval_env.get_original_obs()["observation"][0]  # type: ignore[attr-defined]
        assert _block_offset(train_obs) < 0.03
        assert _block_offset(eval_obs) > 0.05
    finally:
        train_env.close()
        eval_env.close()


def test_her_sac_trains_with_grasped_starts(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(*TINY, f"env={PNP}", "grasped_start_prob=0.5", "algorithm.learner.learning_starts=100")
    assert math.isfinite(train(cfg, run_dir=tmp_path / "run"))


def test_make_env_refuses_grasped_starts_where_there_is_nothing_to_hold() -> None:
    with pytest.raises(ConfigError, match="grasped_start_prob"):
        make_env("FetchReach-v4", start_probs={"grasped_start_prob": 0.5})
