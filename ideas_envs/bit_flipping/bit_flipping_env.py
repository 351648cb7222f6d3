"""Bit flipping goal env (Andrychowicz et al. 2017, section 3.1), the smallest task that needs HER."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium_robotics.core import GoalEnv


class BitFlippingEnv(GoalEnv):
    """Flip bits of an ``n_bits`` vector until it equals a target vector.

    - Action space: ``Discrete(n_bits)``, the index of the bit to flip.
    - Observation space: Dict of ``observation``, ``achieved_goal`` (both the current bits) and
      ``desired_goal`` (the target bits), each ``Box(0, 1, (n_bits,), float32)`` holding 0.0/1.0.
    - Reward: 0 when every bit matches the target, else -1 (vectorised ``compute_reward``).
    - Start state: uniformly random bits and target, drawn from the seeded ``np_random``.
    - Episode end: terminated when the bits match (``compute_terminated`` is vectorised as well); the
      registered id adds a time limit of ``n_bits`` steps.
    - Rendering: ``rgb_array`` draws the bits as a row of squares (white = 1) above the target row, ``width`` x
      ``height`` pixels.
    - Versions: v0, first version.

    :param n_bits: Length of the bit vector.
    :param render_mode: None or ``"rgb_array"``.
    :param width: Width of a rendered frame in pixels.
    :param height: Height of a rendered frame in pixels.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, n_bits: int = 10, render_mode: str | None = None, width: int = 240, height: int = 48) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.n_bits = n_bits
        self.render_mode = render_mode
        self.width, self.height = width, height
        bits = spaces.Box(0.0, 1.0, shape=(n_bits,), dtype=np.float32)
        self.observation_space = spaces.Dict({"observation": bits, "achieved_goal": bits, "desired_goal": bits})
        self.action_space = spaces.Discrete(n_bits)
        self._state = np.zeros(n_bits, dtype=np.float32)
        self._goal = np.zeros(n_bits, dtype=np.float32)

    def _observation(self) -> dict[str, np.ndarray]:
        return {
            "observation": self._state.copy(),
            "achieved_goal": self._state.copy(),
            "desired_goal": self._goal.copy(),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Draw new start bits and target bits."""
        super().reset(seed=seed)
        self._state = self.np_random.integers(0, 2, self.n_bits).astype(np.float32)
        self._goal = self.np_random.integers(0, 2, self.n_bits).astype(np.float32)
        return self._observation(), {"is_success": bool(np.array_equal(self._state, self._goal))}

    def step(self, action: int):
        """Flip the bit named by ``action``."""
        self._state[int(action)] = 1.0 - self._state[int(action)]
        observation = self._observation()
        success = bool(np.array_equal(self._state, self._goal))
        reward = float(self.compute_reward(observation["achieved_goal"], self._goal, {}))
        return observation, reward, success, False, {"is_success": success}

    def render(self) -> np.ndarray | None:
        """The current bits (top row) and the target bits (bottom row) as an RGB image; None without a mode."""
        if self.render_mode != "rgb_array":
            return None
        rows = np.stack([self._state, self._goal])  # 2 x n_bits of 0/1
        columns = (np.arange(self.width) * self.n_bits) // self.width
        lines = (np.arange(self.height) * 2) // self.height
        grey = (rows[lines][:, columns] * 200 + 30).astype(np.uint8)
        grey[:, :: max(1, self.width // self.n_bits)] = 90  # a thin line between the bits
        return np.repeat(grey[:, :, None], 3, axis=2)

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        """0 where all bits match, -1 elsewhere; works on single goals and on batches (last axis = bits)."""
        return -(np.abs(np.asarray(achieved_goal) - np.asarray(desired_goal)).sum(axis=-1) > 0).astype(np.float32)

    def compute_terminated(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        """An episode ends exactly when the goal is reached."""
        return self.compute_reward(achieved_goal, desired_goal, info) == 0

    def compute_truncated(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> bool:
        """Truncation is left to the registered time limit."""
        return False
