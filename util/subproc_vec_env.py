"""A subprocess VecEnv for goal envs: the env steps in its own process, goal functions stay in this one."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env import SubprocVecEnv

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
