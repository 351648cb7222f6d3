"""A BitFlipping env that fails on purpose, for the sweeper's crash tests (`env=tests.sweeper_faults:Faulty-v0`).

`env_kwargs.fault`: any value starting with `ok` behaves normally; `raise` raises on reset, `kill` kills its own
process with SIGKILL on reset, `nan_success` reports `is_success = NaN` (so the trial's objective is NaN).
"""

from __future__ import annotations

import math
import os
import signal
from typing import Any

import gymnasium as gym

from ideas_envs.bit_flipping.bit_flipping_env import BitFlippingEnv


class FaultyBitFlippingEnv(BitFlippingEnv):
    """BitFlipping with 4 bits whose `fault` kwarg picks how it fails (see module docstring)."""

    def __init__(self, fault: str = "ok") -> None:
        super().__init__(n_bits=4)
        self.fault = fault

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Reset, or fail as configured."""
        if self.fault == "raise":
            raise RuntimeError("FaultyBitFlippingEnv: failing on purpose")
        if self.fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        """Step; with fault `nan_success` the success flag is NaN."""
        observation, reward, terminated, truncated, info = super().step(action)
        if self.fault == "nan_success":
            info = {**info, "is_success": math.nan}
        return observation, reward, terminated, truncated, info


if "Faulty-v0" not in gym.registry:
    gym.register(id="Faulty-v0", entry_point=FaultyBitFlippingEnv, max_episode_steps=4)
