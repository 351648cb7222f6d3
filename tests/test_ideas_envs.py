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
from ideas_envs.ant_four_rooms.ant_four_rooms_env import room_of
from ideas_envs.ant_goal_env import AntGoalEnv
from ideas_envs.blocks.blocks_env import BlocksEnv
from ideas_envs.button_unlock.button_unlock_env import ButtonUnlockEnv
from ideas_envs.hook.hook_env import HookEnv
from ideas_envs.register_envs import blocks_variants
from ideas_envs.scripted_solvers import TorsoDriver, WaypointFollower, aim_action, four_rooms_path, scripted_success
from tests.conftest import TINY

BLOCKS_IDS = [env_id for env_id, _, _ in blocks_variants()]
ALL_IDS = [env_id for env_id, spec in gym.registry.items() if str(spec.entry_point).startswith("ideas_envs.")]
# One id per env class, for the tests that need a picture or a bespoke check.
RENDER_IDS = ["Blocks-o2-gripper_above-v1", "Hook-o1-v1", "ButtonUnlock-o2-v1", "AntReacher-v1", "Ant4Rooms-v1"]


def test_all_blocks_ids_registered() -> None:
    expected = {f"Blocks-o{n}-gripper_{g}-v1" for n in range(5) for g in ("above", "random", "none")}
    assert set(BLOCKS_IDS) == expected - {"Blocks-o0-gripper_none-v1"}
    assert set(BLOCKS_IDS) <= set(ALL_IDS)
    assert gym.spec("Blocks-o0-gripper_above-v1").max_episode_steps == 50
    assert gym.spec("Blocks-o4-gripper_none-v1").max_episode_steps == 250


def test_tool_unlock_and_ant_ids_registered() -> None:
    expected = {
        "Hook-o1-v1": 150,
        "ButtonUnlock-o1-v1": 100,
        "ButtonUnlock-o2-v1": 150,
        "AntReacher-v1": 500,
        "Ant4Rooms-v1": 700,
    }
    assert {env_id: gym.spec(env_id).max_episode_steps for env_id in expected} == expected
    assert set(expected) <= set(ALL_IDS)


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


@pytest.mark.parametrize(
    ("env_id", "n_seeds", "min_successes"),
    [pytest.param(env_id, 4, 3, id=env_id) for env_id in BLOCKS_IDS]
    + [pytest.param(env_id, 10, 8, marks=pytest.mark.slow, id=f"{env_id}-10seeds") for env_id in BLOCKS_IDS],
)
def test_scripted_controller_solves_blocks(env_id: str, n_seeds: int, min_successes: int) -> None:
    """Most seeds succeed: 3 of 4 in the quick suite, 8 of 10 (the bar) with `-m slow`."""
    successes = sum(scripted_success(env_id, seed) for seed in range(n_seeds))
    assert successes >= min_successes, f"{successes}/{n_seeds} scripted episodes succeeded"


@pytest.mark.parametrize("env_id", ["Hook-o1-v1", "ButtonUnlock-o1-v1", "ButtonUnlock-o2-v1"])
def test_scripted_controller_solves_hook_and_buttons(env_id: str) -> None:
    seeds = range(10)
    successes = sum(scripted_success(env_id, seed) for seed in seeds)
    assert successes >= 8, f"{successes}/{len(seeds)} scripted episodes succeeded"


@pytest.mark.parametrize(
    ("env_id", "achieved", "desired", "expected"),
    [
        ("Hook-o1-v1", [1.3, 0.7, 0.425], [1.3, 0.7, 0.725], -0.3),
        ("ButtonUnlock-o2-v1", [1.3, 0.7, 0.5, 1.0, 0.0], [1.3, 0.3, 0.5, 1.0, 1.0], -1.4),
        ("AntReacher-v1", [0.0, 0.0], [3.0, 4.0], -5.0),
        ("Ant4Rooms-v1", [3.0, 3.0], [-3.0, 3.0], -6.0),
    ],
)
def test_dense_reward_is_minus_the_summed_part_distances(
    env_id: str, achieved: list[float], desired: list[float], expected: float
) -> None:
    env = gym.make(env_id, reward_type="dense")
    reward = env.unwrapped.compute_reward(np.array(achieved), np.array(desired), {})
    assert reward == pytest.approx(expected)
    assert env.unwrapped.compute_reward(np.array(desired), np.array(desired), {}) == 0.0
    env.close()


def test_hook_block_is_out_of_the_grippers_reach() -> None:
    env = gym.make("Hook-o1-v1")
    env.reset(seed=0)
    hook: HookEnv = env.unwrapped
    start = hook.block_position()
    # Straight at the block (over the hook, at block height) for 40 steps: the gripper stops short of it.
    for _ in range(40):
        env.step(aim_action(hook, start, 1.0))
    assert hook.grip_position()[0] < start[0] - 0.1
    np.testing.assert_allclose(hook.block_position(), start, atol=1e-3)
    env.close()


def test_button_goal_region_counts_only_after_every_press() -> None:
    env = gym.make("ButtonUnlock-o2-v1")
    env.reset(seed=0)
    buttons: ButtonUnlockEnv = env.unwrapped
    follower = WaypointFollower(buttons, [(lambda: buttons.goal[:3], -1.0, 0.0)])
    for _ in range(30):
        _, reward, _, _, info = env.step(follower())
    assert np.linalg.norm(buttons.grip_position() - buttons.goal[:3]) < buttons.distance_threshold
    assert not info["is_success"] and reward == -1.0 and not buttons.latches.any()
    achieved = np.array([*buttons.goal[:3], 1.0, 0.0])
    assert buttons.compute_reward(achieved, buttons.goal, {}) == -1.0
    assert buttons.compute_reward(np.array([*buttons.goal[:3], 1.0, 1.0]), buttons.goal, {}) == 0.0
    env.close()


def torso_driver(env: gym.Env) -> TorsoDriver:
    """Pushes the torso to the goal, through the doorways in Ant4Rooms."""
    ant = env.unwrapped
    return TorsoDriver(ant, four_rooms_path(ant.torso_xy(), ant.goal) if env.spec.id == "Ant4Rooms-v1" else [ant.goal])


@pytest.mark.parametrize("env_id", ["AntReacher-v1", "Ant4Rooms-v1"])
def test_driven_ant_torso_reaches_goal(env_id: str) -> None:
    """Every sampled goal is reachable within the episode limit at 1 m/s (through the doorways in Ant4Rooms) and
    the success test fires there. The torso is pushed by an external force, see TorsoDriver."""
    seeds = range(10)
    successes = sum(scripted_success(env_id, seed, torso_driver) for seed in seeds)
    assert successes >= 9, f"{successes}/{len(seeds)} driven episodes succeeded"


@pytest.mark.parametrize("env_id", ["AntReacher-v1", "Ant4Rooms-v1"])
def test_ant_gait_reaches_goal(env_id: str) -> None:
    """The ant's own motors suffice: the steered open-loop gait (AntGaitWalker) reaches the goal on most seeds
    (in the failures seen the ant had fallen over)."""
    seeds = range(10)
    successes = sum(scripted_success(env_id, seed) for seed in seeds)
    assert successes >= 7, f"{successes}/{len(seeds)} gait episodes succeeded"


def test_random_actions_keep_the_ant_upright() -> None:
    """With the HAC-era gear-16 motors, uniformly random torques do not turn the ant over within an episode (with
    ant.xml's gear 150 they did within ~130 steps in 6 of 6 episodes)."""
    env = gym.make("AntReacher-v1")
    ant: AntGoalEnv = env.unwrapped
    for seed in range(3):
        env.reset(seed=seed)
        env.action_space.seed(seed)
        for _ in range(500):
            env.step(env.action_space.sample())
            assert ant.is_upright(), f"seed {seed}: the ant turned over"
    env.close()


def test_four_rooms_walls_stop_the_ant() -> None:
    """Driven from the north-east room straight at a point behind the middle wall, the torso stays east of it."""
    env = gym.make("Ant4Rooms-v1")
    seed = next(s for s in range(20) if env.reset(seed=s) and int(room_of(env.unwrapped.torso_xy())) == 0)
    env.reset(seed=seed)
    ant: AntGoalEnv = env.unwrapped
    driver = TorsoDriver(ant, [np.array([-3.0, -1.0])])
    for _ in range(200):
        env.step(driver())
        assert ant.torso_xy()[0] > 0.0
    env.close()


@pytest.mark.parametrize("env_id", RENDER_IDS)
def test_render_rgb_array_shows_the_scene_and_goal(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array", width=96, height=96)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8
    assert frame.std() > 10.0
    # Moving the goal by a quarter of its bounds moves the markers in the picture.
    unwrapped = env.unwrapped
    low, high = unwrapped.goal_bounds()
    unwrapped.goal = unwrapped.goal + (high - low) / 4
    moved = env.render()
    env.close()
    assert np.abs(moved.astype(int) - frame.astype(int)).sum(axis=-1).astype(bool).sum() > 10


def test_her_learns_on_blocks_o0(make_cfg, tmp_path: Path) -> None:
    overrides = (
        "env=Blocks-o0-gripper_above-v1",
        "n_epochs=1",
        "algorithm.learner.learning_starts=100",
        "comet.mode=off",
    )
    cfg = make_cfg(*TINY, *overrides)
    score = train(cfg, run_dir=tmp_path / "run")
    assert math.isfinite(score)


def test_bit_flipping_renders_its_bits_above_the_target() -> None:
    env = gym.make("BitFlipping-v0", render_mode="rgb_array", width=100, height=20)
    observation, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (20, 100, 3) and frame.dtype == np.uint8
    bits, target = observation["achieved_goal"], observation["desired_goal"]
    centres = (np.arange(10) * 10 + 5).astype(int)  # the middle column of each bit's square
    np.testing.assert_array_equal(frame[5, centres, 0] > 128, bits > 0.5)
    np.testing.assert_array_equal(frame[15, centres, 0] > 128, target > 0.5)
    env.close()
