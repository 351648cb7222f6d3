"""Overlapping a learner's gradient step with the env step that a subprocess computes meanwhile."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from stable_baselines3.common.vec_env import VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn


class TrainWhileStepping(VecEnvWrapper):
    """Runs a hook between sending actions to the env and waiting for its answer.

    Over an env that steps in another process (SB3's SubprocVecEnv), a learner that registers its pending
    gradient steps as the hook trains on one core while the physics runs on the other. Without a hook this
    wrapper changes nothing.
    """

    def __init__(self, venv: VecEnvWrapper | object) -> None:
        super().__init__(venv)  # type: ignore[arg-type]
        self.hook: Callable[[], None] | None = None

    def set_hook(self, hook: Callable[[], None] | None) -> None:
        """Register (or with None remove) what runs while the env steps."""
        self.hook = hook

    def reset(self) -> VecEnvObs:
        """Reset every env (no hook)."""
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        """Send the actions; the env starts computing."""
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        """Run the hook, then collect the env's answer."""
        if self.hook is not None:
            self.hook()
        return self.venv.step_wait()
