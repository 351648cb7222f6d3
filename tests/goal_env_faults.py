"""Goal envs whose reward function HER and HAC cannot use, for the bad-input tests
(`env=tests.goal_env_faults:<id>`).

`ScalarReward-v0` answers a batch of goal pairs with one number, `ColumnReward-v0` with shape (batch, 1), and
`NoComputeReward-v0` has the goal observation but no `compute_reward` at all.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ideas_envs.bit_flipping.bit_flipping_env import BitFlippingEnv


class ScalarRewardBitFlippingEnv(BitFlippingEnv):
    """BitFlipping with 4 bits whose `compute_reward` is written for one goal pair: a batch gets one reward."""

    def __init__(self) -> None:
        super().__init__(n_bits=4)

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> float:  # type: ignore[override]
        """0 if every bit matches, else -1, over the whole argument."""
        return -float(np.any(achieved_goal != desired_goal))


class ColumnRewardBitFlippingEnv(BitFlippingEnv):
    """BitFlipping with 4 bits whose `compute_reward` keeps a trailing axis: shape (batch, 1)."""

    def __init__(self) -> None:
        super().__init__(n_bits=4)

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        """-1 per row with any differing bit, as a column."""
        return -np.any(achieved_goal != desired_goal, axis=-1, keepdims=True).astype(np.float32)


class NoComputeRewardEnv(gym.Env):
    """A Dict observation with the three goal keys, but no `compute_reward`: not a goal env HER can relabel."""

    def __init__(self) -> None:
        bits = spaces.Box(0.0, 1.0, shape=(4,), dtype=np.float32)
        self.observation_space = spaces.Dict({"observation": bits, "achieved_goal": bits, "desired_goal": bits})
        self.action_space = spaces.Discrete(4)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Random bits and goal."""
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        """Nothing changes; reward -1."""
        return self.observation_space.sample(), -1.0, False, False, {"is_success": 0.0}


for _id, _entry_point in (
    ("ScalarReward-v0", ScalarRewardBitFlippingEnv),
    ("ColumnReward-v0", ColumnRewardBitFlippingEnv),
    ("NoComputeReward-v0", NoComputeRewardEnv),
):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry_point, max_episode_steps=4)
