"""Goal envs that pay +1 at the goal and 0 elsewhere, re-expressed as 0 at the goal and -1 elsewhere."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

# How far from the goal the convention probe looks: beyond any success radius, within float range of exp(-d).
_PROBE_DISTANCE = 10.0


def pays_one_at_goal(env: gym.Env) -> bool:
    """True for a goal env whose `compute_reward` is exactly 1 at the goal and exactly 0 far from it.

    That is gymnasium-robotics' PointMaze/AntMaze with `reward_type="sparse"` (their default); dense mazes
    (exp(-distance)) and -1/0 envs (Fetch, ours) are not matched. Probes the reward function only, never the
    env's state or random generators.
    """
    space = env.observation_space
    compute_reward = getattr(env.unwrapped, "compute_reward", None)
    if not (callable(compute_reward) and isinstance(space, gym.spaces.Dict) and "desired_goal" in space.spaces):
        return False
    goal = np.zeros(space["desired_goal"].shape)
    at_goal, away = (
        float(np.asarray(compute_reward(goal, desired, {})).reshape(-1)[0])
        for desired in (goal, goal + _PROBE_DISTANCE)
    )
    return at_goal == 1.0 and away == 0.0


class MinusOneZeroReward(gym.Wrapper):
    """Maps a goal env's sparse 0/+1 reward to the -1/0 convention (reward - 1) everywhere the reward is read.

    HAC judges a goal reached by ``compute_reward == 0``, penalises missed subgoal tests with -H and bounds its
    Q-values to [-H, 0]; HER's defaults assume the same. gymnasium-robotics' mazes pay +1 at the goal instead.
    This wrapper shifts the reward of :meth:`step` and of the vectorised :meth:`compute_reward` (which HER and
    HAC call on batches through the wrapper chain, ``VecEnv.get_attr("compute_reward")``), and gives a
    vectorised :meth:`compute_terminated`: a reached goal is terminal exactly when the env itself ends episodes
    on success (the mazes with ``continuing_task=False``). ``info["is_success"]`` is kept where the env reports
    it and otherwise set from the reward (the mazes only report ``info["success"]``, with the same 0.45 radius).

    :param env: A goal env for which :func:`pays_one_at_goal` holds.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._env_compute_reward = env.get_wrapper_attr("compute_reward")
        env_terminated = getattr(env.unwrapped, "compute_terminated", None)
        goal = np.zeros(env.observation_space["desired_goal"].shape)  # type: ignore[index]
        # The mazes' own compute_terminated handles one goal pair only; ask it once whether success ends episodes.
        self.ends_on_success = bool(env_terminated(goal, goal, {})) if callable(env_terminated) else False

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """The env's step with reward - 1 and ``info["is_success"]``."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        if "is_success" not in info:
            info = {**info, "is_success": float(reward) == 1.0}
        return obs, float(reward) - 1.0, terminated, truncated, info

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        """The env's vectorised reward minus 1: 0 where the goal is reached, -1 elsewhere."""
        return np.asarray(self._env_compute_reward(achieved_goal, desired_goal, info), dtype=np.float64) - 1.0

    def compute_terminated(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        """Vectorised: reached goals where the env ends episodes on success, else all False."""
        return (self.compute_reward(achieved_goal, desired_goal, info) == 0.0) & self.ends_on_success
