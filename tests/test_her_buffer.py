"""The HER maths: relabelled goals come from the right place, with the right reward and terminal flag."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest

import interface.envs  # noqa: F401  (registers gymnasium-robotics and our envs)
from ideas_baselines.her import HindsightReplayBuffer


def _fill(
    env_id: str, strategy: str, n_steps: int, buffer_size: int, seed: int = 0
) -> tuple[HindsightReplayBuffer, gym.Env]:
    """Store `n_steps` random-action transitions of `env_id` in a fresh buffer, SB3-style (timeouts in infos)."""
    env = gym.make(env_id)
    buffer = HindsightReplayBuffer(
        buffer_size,
        env.observation_space,
        env.action_space,
        device="cpu",
        n_sampled_goal=4,
        goal_selection_strategy=strategy,
    )
    buffer.attach_goal_functions(env.unwrapped.compute_reward, env.unwrapped.compute_terminated)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(n_steps):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        stored_info = {"TimeLimit.truncated": truncated and not terminated}
        batched = {k: v[None] for k, v in obs.items()}
        batched_next = {k: v[None] for k, v in next_obs.items()}
        buffer.add(batched, batched_next, np.array([action]), np.array([reward]), np.array([done]), [stored_info])
        obs = env.reset()[0] if done else next_obs
    return buffer, env


@pytest.mark.parametrize("env_id", ["FetchReach-v4", "BitFlipping-v0"])
@pytest.mark.parametrize("strategy", ["future", "final", "episode"])
def test_relabelled_rewards_and_terminals_match_the_env(env_id: str, strategy: str) -> None:
    np.random.seed(1)
    buffer, env = _fill(env_id, strategy, n_steps=600, buffer_size=1000)
    batch = buffer.sample_transitions(2048)
    assert 0.7 < batch.relabelled.mean() < 0.9  # k=4 relabels 80%
    expected_reward = env.unwrapped.compute_reward(
        batch.next_observations["achieved_goal"], batch.next_observations["desired_goal"], [{}] * 2048
    )
    np.testing.assert_array_equal(batch.rewards, expected_reward)
    expected_terminal = np.broadcast_to(
        env.unwrapped.compute_terminated(
            batch.next_observations["achieved_goal"], batch.next_observations["desired_goal"], [{}] * 2048
        ),
        (2048,),
    ).astype(np.float32)
    relabelled = batch.relabelled
    np.testing.assert_array_equal(batch.terminals[relabelled], expected_terminal[relabelled])
    # Transitions kept as they were keep the env's terminated flag, and a time-limit end is never terminal.
    stored_terminal = buffer.dones[batch.transition_index, 0] * (1 - buffer.timeouts[batch.transition_index, 0])
    np.testing.assert_array_equal(batch.terminals[~relabelled], stored_terminal[~relabelled])
    if env_id == "FetchReach-v4":
        assert not batch.terminals.any()  # Fetch never terminates: every episode end is a truncation
    np.testing.assert_array_equal(batch.observations["desired_goal"], batch.next_observations["desired_goal"])


@pytest.mark.parametrize("strategy", ["future", "final", "episode"])
def test_relabelled_goals_are_achieved_goals_of_the_same_episode(strategy: str) -> None:
    np.random.seed(2)
    buffer, _ = _fill("FetchReach-v4", strategy, n_steps=500, buffer_size=1000)
    batch = buffer.sample_transitions(1024)
    r = batch.relabelled
    start = buffer.ep_start[batch.transition_index, 0][r]
    length = buffer.ep_length[batch.transition_index, 0][r]
    t = batch.transition_index[r] - start
    g = batch.goal_index[r] - start
    assert (length == 50).all()
    if strategy == "future":
        assert ((g >= t) & (g < length)).all()
    elif strategy == "final":
        assert (g == length - 1).all()
    else:
        assert ((g >= 0) & (g < length)).all()
    np.testing.assert_array_equal(
        batch.observations["desired_goal"][r], buffer.next_observations["achieved_goal"][batch.goal_index[r], 0]
    )
    np.testing.assert_array_equal(
        batch.observations["desired_goal"][~r], buffer.observations["desired_goal"][batch.transition_index[~r], 0]
    )


def test_overwritten_and_unfinished_episodes_are_never_sampled() -> None:
    np.random.seed(3)
    # 50-step episodes in a 120-slot buffer after 330 steps: slots 0-89 hold the newest (partly unfinished) data.
    buffer, _ = _fill("FetchReach-v4", "future", n_steps=330, buffer_size=120)
    batch = buffer.sample_transitions(4096)
    valid = set(np.flatnonzero(buffer.ep_length[:, 0]))
    assert set(batch.transition_index) <= valid
    # Steps 300-329 form an unfinished episode; step 250-299 is complete; 200-249 was partly overwritten.
    unfinished = {i % 120 for i in range(300, 330)}
    assert not (unfinished & valid)
    assert {i % 120 for i in range(250, 300)} <= valid
    assert buffer.n_complete_transitions() == 50
    for index in set(batch.goal_index):
        assert index in valid


def test_sampling_needs_goal_functions_and_replays_unrelabelled_before_the_first_episode_ends() -> None:
    env = gym.make("FetchReach-v4")
    buffer = HindsightReplayBuffer(100, env.observation_space, env.action_space, device="cpu")
    with pytest.raises(RuntimeError, match="attach_goal_functions"):
        buffer.sample(4)
    buffer.attach_goal_functions(env.unwrapped.compute_reward, None)
    with pytest.raises(RuntimeError, match="empty"):
        buffer.sample(4)
    np.random.seed(4)
    buffer, _ = _fill("FetchReach-v4", "future", n_steps=30, buffer_size=100)
    batch = buffer.sample_transitions(64)
    assert not batch.relabelled.any()
    assert (batch.transition_index < 30).all()
    np.testing.assert_array_equal(batch.rewards, buffer.rewards[batch.transition_index, 0])
    np.testing.assert_array_equal(
        batch.observations["desired_goal"], buffer.observations["desired_goal"][batch.transition_index, 0]
    )


@pytest.mark.parametrize("floor,bounded", [(0.01, True), (0.0, False)])
def test_std_floor_keeps_relabelled_goals_on_a_table_bounded(floor: float, bounded: bool) -> None:
    """FetchPush's own goals all lie at the table's height, so their height has almost no variance. A goal the
    block achieved a millimetre off that height (what HER relabels with) must normalise to a small value, as the
    env's own goals do, not to the clip bound."""
    from interface.envs import make_vec_env

    env = make_vec_env("FetchPush-v4", {}, seed=0, normalize_obs=True, obs_std_floor=floor)
    env.reset()
    for _ in range(300):
        env.step(np.array([env.action_space.sample()]))
    goal_height = float(env.obs_rms["desired_goal"].mean[2])
    assert env.obs_rms["desired_goal"].var[2] < 1e-6  # the premise: the env's goals barely vary in height
    observation = {key: np.zeros((1, *space.shape)) for key, space in env.observation_space.spaces.items()}
    observation["desired_goal"][0] = env.obs_rms["desired_goal"].mean
    observation["desired_goal"][0, 2] = goal_height + 0.001
    normalised_height = abs(float(env.normalize_obs(observation)["desired_goal"][0, 2]))
    assert (normalised_height <= 0.2) == bounded, normalised_height


@pytest.mark.parametrize("shared,bounded", [(True, True), (False, False)])
def test_shared_goal_statistics_keep_achieved_goals_inside_the_clip_bound(
    shared: bool, bounded: bool, tmp_path
) -> None:
    """ButtonUnlock's own goals always ask for pressed buttons, so those components never vary in the desired
    goals; an achieved goal with a button still up (what HER relabels with) must stay inside the clip bound.
    Sharing one running mean/std between the goal keys does that, and survives saving and loading."""
    from stable_baselines3.common.vec_env import VecNormalize

    from interface.envs import make_vec_env

    env = make_vec_env("ButtonUnlock-o2-v1", {}, seed=0, normalize_obs=True, shared_goal_statistics=shared)
    env.reset()
    for _ in range(300):
        env.step(np.array([env.action_space.sample()]))
    assert (env.obs_rms["desired_goal"] is env.obs_rms["achieved_goal"]) == shared
    raw = env.get_original_obs()
    relabelled = {key: value.copy() for key, value in raw.items()}
    relabelled["desired_goal"] = raw["achieved_goal"].copy()
    largest = float(np.abs(env.normalize_obs(relabelled)["desired_goal"]).max())
    assert (largest < 0.5 * env.clip_obs) == bounded, largest

    env.save(str(tmp_path / "vecnormalize.pkl"))
    loaded = VecNormalize.load(str(tmp_path / "vecnormalize.pkl"), env.venv)
    assert (loaded.obs_rms["desired_goal"] is loaded.obs_rms["achieved_goal"]) == shared


@pytest.mark.parametrize(("n_steps", "compact"), [(120, True), (5_000, False)])
def test_a_pickled_buffer_holds_its_filled_rows_and_restores_every_array(n_steps: int, compact: bool) -> None:
    """Before it wraps, a pickled buffer costs its filled rows, not its capacity; after unpickling every array, the
    samples and the next writes are those of the original."""
    buffer, env = _fill("FetchReach-v4", "future", n_steps=n_steps, buffer_size=4_000)
    data = pickle.dumps(buffer)
    full_size = sum(value.nbytes for value in buffer.observations.values()) * 2 + buffer.actions.nbytes
    assert (len(data) < full_size / 10) == compact
    restored = pickle.loads(data)
    restored.attach_goal_functions(env.unwrapped.compute_reward, env.unwrapped.compute_terminated)
    for key, value in vars(buffer).items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(restored, key), value)
    for part in ("observations", "next_observations"):
        for key, value in getattr(buffer, part).items():
            np.testing.assert_array_equal(getattr(restored, part)[key], value)
    assert (restored.pos, restored.full) == (buffer.pos, buffer.full)
    samples = []
    for copy in (buffer, restored):
        np.random.seed(5)
        samples.append(copy.sample_transitions(64))
    for original, again in zip(*samples, strict=True):
        for key in original if isinstance(original, dict) else [None]:
            pair = (again[key], original[key]) if key else (again, original)
            np.testing.assert_array_equal(*pair)
