"""One HAC layer's replay: hindsight-goal relabelling of its sub-episodes plus its subgoal-testing penalties."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.type_aliases import DictReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from ideas_baselines.her import HindsightReplayBuffer
from ideas_baselines.her.hindsight_replay_buffer import CompactDictReplayBuffer


class SubgoalTestingBuffer(HindsightReplayBuffer):
    """A :class:`HindsightReplayBuffer` over one layer's sub-episodes, with a side store of penalty transitions.

    The main store holds the layer's hindsight-action transitions, one HER "episode" per sub-episode of at most
    H actions, and relabels their goals at sampling time. Subgoal-testing penalties (reward -H, terminal) live
    apart in :attr:`penalties`: they keep the goal they were given (Levy et al. 2019, section 4.3) and must
    not close the sub-episode they happened in. A batch mixes both stores in proportion to their sizes, which
    is what one uniform buffer over all transitions would give.

    Takes exactly :class:`HindsightReplayBuffer`'s constructor arguments.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.penalties = CompactDictReplayBuffer(
            self.buffer_size,
            self.observation_space,
            self.action_space,
            device=self.device,
            n_envs=self.n_envs,
            handle_timeout_termination=False,
        )

    def add_penalty(
        self, obs: dict[str, np.ndarray], next_obs: dict[str, np.ndarray], action: np.ndarray, penalty: float
    ) -> None:
        """Store a missed tested subgoal: its original action, reward ``penalty`` and a terminal flag."""
        n_envs = self.n_envs
        self.penalties.add(
            obs, next_obs, action, np.full(n_envs, penalty, dtype=np.float32), np.ones(n_envs), [{}] * n_envs
        )

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> DictReplayBufferSamples:  # type: ignore[override]
        """Sample relabelled sub-episode transitions and penalties, proportionally to how many each store holds."""
        n_penalties = self.penalties.size()
        n_main = self.n_complete_transitions()
        n_from_penalties = np.random.binomial(batch_size, n_penalties / (n_penalties + n_main)) if n_penalties else 0
        parts = []
        if batch_size > n_from_penalties:
            parts.append(super().sample(batch_size - n_from_penalties, env))
        if n_from_penalties:
            parts.append(self.penalties.sample(n_from_penalties, env))
        if len(parts) == 1:
            return parts[0]
        main, tested = parts
        return DictReplayBufferSamples(
            observations={key: th.cat([main.observations[key], tested.observations[key]]) for key in main.observations},
            actions=th.cat([main.actions, tested.actions]),
            next_observations={
                key: th.cat([main.next_observations[key], tested.next_observations[key]]) for key in main.observations
            },
            dones=th.cat([main.dones, tested.dones]),
            rewards=th.cat([main.rewards, tested.rewards]),
        )
