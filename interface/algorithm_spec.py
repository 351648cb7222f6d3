"""The registry entry type: how one `algorithm=<name>` config group builds and reloads its model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from stable_baselines3.common.vec_env import VecEnv

from util.model_protocol import owns_replay_buffer


def _nothing_to_attach(model: Any, env: VecEnv) -> None:
    """Most models carry everything they need in their save file."""


@dataclass(frozen=True)
class AlgorithmSpec:
    """What the experiment needs to know about one algorithm config group.

    :param name: The config group option (`algorithm=<name>`).
    :param model_class: The class of the model a config builds (SB3-style: `load(path, env=, device=)`).
    :param build: Creates a fresh model for a vectorised env: `(algorithm_cfg, env, seed, device)`.
    :param after_load: Re-attaches what a saved model cannot carry (e.g. HER's link to the env's reward).
    """

    name: str
    model_class: Callable[[DictConfig], type]
    build: Callable[[DictConfig, VecEnv, int, str], Any]
    after_load: Callable[[Any, VecEnv], None] = _nothing_to_attach

    def load(
        self, algorithm_cfg: DictConfig, path: Path, env: VecEnv, device: str, replay_buffer: Path | None = None
    ) -> Any:
        """Load a saved model (and its replay buffer, if saved) of this algorithm and bind it to `env`.

        The episode that was running when the buffer was saved is dropped: training resumes with a fresh reset.
        """
        model = self.model_class(algorithm_cfg).load(path, env=env, device=device)
        if replay_buffer is not None and replay_buffer.exists() and owns_replay_buffer(model):
            model.load_replay_buffer(replay_buffer)
        self.after_load(model, env)
        return model
