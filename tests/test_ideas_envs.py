"""Every registered ideas_envs id: gymnasium's checker, determinism, vectorised rewards, solvability, rendering."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from experiment.train import train
from ideas_envs.blocks.blocks_env import BlocksEnv
from ideas_envs.register_envs import blocks_variants
from tests.conftest import TINY

BLOCKS_IDS = [env_id for env_id, _, _ in blocks_variants()]
ALL_IDS = [env_id for env_id, spec in gym.registry.items() if str(spec.entry_point).startswith("ideas_envs.")]


def test_all_blocks_ids_registered() -> None:
    expected = {f"Blocks-o{n}-gripper_{g}-v1" for n in range(5) for g in ("above", "random", "none")}
    assert set(BLOCKS_IDS) == expected - {"Blocks-o0-gripper_none-v1"}
    assert set(BLOCKS_IDS) <= set(ALL_IDS)
    assert gym.spec("Blocks-o0-gripper_above-v1").max_episode_steps == 50
    assert gym.spec("Blocks-o4-gripper_none-v1").max_episode_steps == 250


def test_o0_without_gripper_goal_is_refused() -> None:
    with pytest.raises(ValueError, match="gripper goal"):
        BlocksEnv(n_objects=0, gripper_goal="none")


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_check_env(env_id: str) -> None:
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Box observation space (minimum|maximum) value is")
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


def _rollout(env_id: str, seed: int, n_steps: int) -> Iterator[tuple[dict, float, dict]]:
    env = gym.make(env_id)
    env.action_space.seed(seed)
    observation, info = env.reset(seed=seed)
    yield observation, 0.0, info
    for _ in range(n_steps):
        observation, reward, _, _, info = env.step(env.action_space.sample())
        yield observation, float(reward), info
    env.close()


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_same_seed_same_observations(env_id: str) -> None:
    first = [obs for obs, _, _ in _rollout(env_id, seed=3, n_steps=5)]
    second = [obs for obs, _, _ in _rollout(env_id, seed=3, n_steps=5)]
    other = [obs for obs, _, _ in _rollout(env_id, seed=4, n_steps=0)]
    for a, b in zip(first, second, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(first[0]["desired_goal"], other[0]["desired_goal"])


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_batched_reward_matches_per_sample_and_success(env_id: str) -> None:
    env = gym.make(env_id)
    steps = list(_rollout(env_id, seed=0, n_steps=8))
    achieved = np.stack([obs["achieved_goal"] for obs, _, _ in steps])
    desired = np.stack([obs["desired_goal"] for obs, _, _ in steps])
    # Half the rows relabelled with their own achieved goal (as HER does), so both reward values occur.
    desired[::2] = achieved[::2]
    batch = env.unwrapped.compute_reward(achieved, desired, [{} for _ in steps])
    single = [env.unwrapped.compute_reward(a, d, {}) for a, d in zip(achieved, desired, strict=True)]
    assert batch.shape == (len(steps),)
    np.testing.assert_array_equal(batch, np.array(single))
    assert set(np.unique(batch)) == {-1.0, 0.0}
    for observation, reward, info in steps[1:]:
        assert info["is_success"] == (reward == 0.0)
        assert reward == env.unwrapped.compute_reward(observation["achieved_goal"], observation["desired_goal"], {})
    env.close()


class ScriptedStacker:
    """Pick-and-place controller for Blocks (written for the tests): reads block and goal positions from the env.

    For each block in goal order: hover over it, descend, close, lift, carry over its tower slot, lower,
    open, rise; then move the gripper to its target. Proportional control on the grip position.
    """

    def __init__(self, env: BlocksEnv) -> None:
        self.env = env
        self.block = 0
        self.phase = 0
        self.wait = 0

    def _aim(self, target: np.ndarray, fingers: float) -> np.ndarray:
        move = np.clip((target - self.env.grip_position()) * 15.0, -1.0, 1.0)
        return np.array([*move, fingers])

    def __call__(self) -> np.ndarray:
        env = self.env
        grip = env.grip_position()
        goal = env.goal.reshape(-1, 3)
        safe_z = goal[: env.n_objects, 2].max(initial=0.4) + 0.08
        if self.block == env.n_objects:
            target = goal[env.n_objects] if env.gripper_goal != "none" else grip
            return self._aim(target, 1.0)
        block = env._utils.get_site_xpos(env.model, env.data, env.blocks[self.block]).copy()
        slot = goal[self.block]
        waypoints = [  # (aim, fingers, tolerance or number of steps to wait)
            (np.array([*block[:2], safe_z]), 1.0, 0.01),
            (block, 1.0, 0.008),
            (block, -1.0, -4),
            (np.array([*grip[:2], safe_z]), -1.0, 0.02),
            (np.array([*slot[:2], safe_z]), -1.0, 0.008),
            (slot + np.array([0.0, 0.0, 0.005]), -1.0, 0.008),
            (grip, 1.0, -3),
            (np.array([*slot[:2], safe_z]), 1.0, 0.02),
        ]
        aim, fingers, done_when = waypoints[self.phase]
        if done_when < 0:
            self.wait += 1
            finished = self.wait >= -done_when
        else:
            finished = np.linalg.norm(aim - grip) < done_when
        if finished:
            self.wait = 0
            self.phase += 1
            if self.phase == len(waypoints):
                self.phase, self.block = 0, self.block + 1
        return self._aim(aim, fingers)


def _scripted_success(env_id: str, seed: int) -> bool:
    env = gym.make(env_id)
    env.reset(seed=seed)
    controller = ScriptedStacker(env.unwrapped)
    done = success = False
    while not (done or success):
        _, _, terminated, truncated, info = env.step(controller())
        done, success = terminated or truncated, bool(info["is_success"])
    env.close()
    return success


@pytest.mark.parametrize("env_id", BLOCKS_IDS)
def test_scripted_controller_solves_blocks(env_id: str) -> None:
    seeds = range(4)
    successes = sum(_scripted_success(env_id, seed) for seed in seeds)
    assert successes >= 3, f"{successes}/{len(seeds)} scripted episodes succeeded"


def test_render_rgb_array_shows_the_scene() -> None:
    env = gym.make("Blocks-o2-gripper_above-v1", render_mode="rgb_array", width=96, height=96)
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8
    assert frame.std() > 10.0


def test_her_learns_on_blocks_o0(make_cfg, tmp_path: Path) -> None:
    overrides = ("env=Blocks-o0-gripper_above-v1", "n_epochs=1", "algorithm.learner.learning_starts=100", "comet.mode=off")
    cfg = make_cfg(*TINY, *overrides)
    score = train(cfg, run_dir=tmp_path / "run")
    assert math.isfinite(score)
