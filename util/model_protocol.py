"""What the epoch loop, test rollouts, video recording and checkpoints need from a model beyond SB3's API."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm


@runtime_checkable
class EpisodicModel(Protocol):
    """A model whose policy keeps per-episode state (a hierarchy's subgoals) and reports its own metrics.

    SB3's models need none of this; Hierarchical Actor-Critic implements it. The loop and its helpers check
    `isinstance(model, EpisodicModel)` and otherwise treat the model as a plain SB3 model.
    """

    def epoch_metrics(self) -> dict[str, float]:
        """Metrics of the model's own parts since the last call (e.g. per layer), merged into the epoch's."""
        ...

    def observe_episode_end(self, final_observation: dict[str, np.ndarray]) -> None:
        """Close the episode predict() was acting in, on the observation it ended on (unbatched)."""
        ...

    def current_subgoals(self) -> list[np.ndarray]:
        """The goal of every layer in the episode predict() is acting in, lowest first (for drawing)."""
        ...

    def save_replay_buffer(self, path: str | Path) -> None:
        """Write every replay buffer the model owns to one file."""
        ...

    def load_replay_buffer(self, path: str | Path) -> None:
        """Restore buffers written by :meth:`save_replay_buffer`, dropping unfinished episodes."""
        ...


def owns_replay_buffer(model: Any) -> bool:
    """True for models whose replay buffers a checkpoint saves: SB3's off-policy ones and episodic models."""
    return isinstance(model, (OffPolicyAlgorithm, EpisodicModel))
