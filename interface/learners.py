"""The learner registry: every SB3-style learner class a config may name, and what each one can do.

HER (`algorithm.model_class`), the plain algorithms (`algorithm=<name>`) and HAC's layers
(`algorithm.layer_classes`) all pick their learners from this one table.
"""

from __future__ import annotations

from dataclasses import dataclass

from gymnasium import spaces
from sb3_contrib import TQC
from stable_baselines3 import DDPG, DQN, PPO, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

from ideas_baselines.sac import FusedSAC


@dataclass(frozen=True)
class Learner:
    """One learner class and its capabilities.

    :param name: The name configs use (`sac`, `td3`, ...).
    :param cls: The class (SB3 API: constructor, `learn`, `predict`, `save`, `load`).
    :param action_spaces: The action space types it can act in.
    :param replay_buffer: Off-policy with a replay buffer: HER can relabel its goals.
    :param hac_layer: Can be a layer of Hierarchical Actor-Critic (off-policy, continuous actions, a critic
        `critic(obs, actions)` whose target HAC may bound).
    :param trains_while_env_steps: Its gradient step can overlap the env step of a subprocess env
        (`env_subprocess=auto`).
    """

    name: str
    cls: type[BaseAlgorithm]
    action_spaces: tuple[type[spaces.Space], ...]
    replay_buffer: bool
    hac_layer: bool = False
    trains_while_env_steps: bool = False


# SAC is SB3's with a fused gradient step (same losses, API and save files; see ideas_baselines/sac).
LEARNERS: dict[str, Learner] = {
    learner.name: learner
    for learner in (
        Learner("sac", FusedSAC, (spaces.Box,), replay_buffer=True, hac_layer=True, trains_while_env_steps=True),
        Learner("td3", TD3, (spaces.Box,), replay_buffer=True, hac_layer=True),
        Learner("ddpg", DDPG, (spaces.Box,), replay_buffer=True, hac_layer=True),
        Learner("dqn", DQN, (spaces.Discrete,), replay_buffer=True),
        Learner("ppo", PPO, (spaces.Box, spaces.Discrete), replay_buffer=False),
        Learner("tqc", TQC, (spaces.Box,), replay_buffer=True, hac_layer=True),
    )
}
HER_MODEL_CLASSES = tuple(name for name, learner in LEARNERS.items() if learner.replay_buffer)
HAC_LAYER_CLASSES = tuple(name for name, learner in LEARNERS.items() if learner.hac_layer)
