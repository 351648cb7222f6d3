"""A subprocess VecEnv for goal envs (the env steps in its own process, goal functions stay in this one), and the
wrapper that lets a learner train while that process steps."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

# Read from a local copy of the env: stateless functions HER and HAC call on whole batches (a round trip to the
# subprocess per batch would cost more than the call) and static facts about the env.
LOCAL_ATTRIBUTES = frozenset({"compute_reward", "compute_terminated", "unwrapped", "spec"})


class _IgnoringInterrupts:
    """An env factory that, run in a worker, leaves Ctrl-C and SIGTERM to the parent, which closes the worker.

    (A terminal's Ctrl-C reaches the whole process group; a worker that died of it would turn the parent's
    clean checkpoint-and-exit into a broken-pipe traceback.)
    """

    def __init__(self, factory: Callable[[], gym.Env]) -> None:
        self.factory = factory

    def __call__(self) -> gym.Env:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return self.factory()


class GoalSubprocVecEnv(SubprocVecEnv):
    """SB3's SubprocVecEnv that keeps one local, never-stepped copy of the env for :data:`LOCAL_ATTRIBUTES`.

    Workers are forked, so envs registered by the parent (ideas_envs, a user's `module:EnvId`) exist in them
    without a re-import; they ignore SIGINT/SIGTERM and end when the parent closes them or dies. Every other
    attribute is read from the stepping envs, as in SB3.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]]) -> None:
        self.local_env = env_fns[0]()  # first, so that an env that cannot be built fails here, not in a worker
        super().__init__([_IgnoringInterrupts(fn) for fn in env_fns], start_method="fork")

    def get_attr(self, attr_name: str, indices: int | Iterable[int] | None = None) -> list[Any]:
        """Stateless goal functions and static facts from the local copy, everything else from the workers."""
        if attr_name not in LOCAL_ATTRIBUTES:
            return super().get_attr(attr_name, indices)
        value = (
            getattr(self.local_env, attr_name)
            if attr_name == "unwrapped"
            else self.local_env.get_wrapper_attr(attr_name)
        )
        return [value for _ in self._get_indices(indices)]

    def close(self) -> None:
        """Stop the workers (also ones that died already) and close the local copy."""
        try:
            super().close()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            for process in self.processes:
                process.terminate()
                process.join()
            self.closed = True
        self.local_env.close()


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
