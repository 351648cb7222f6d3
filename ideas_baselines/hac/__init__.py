"""Hierarchical Actor-Critic (Levy et al., ICLR 2019) on SB3 off-policy learners."""

from ideas_baselines.hac.hierarchical_actor_critic import (
    HacSettings,
    HierarchicalActorCritic,
    LayerStats,
    build_layer_learner,
)
from ideas_baselines.hac.subgoal_testing_buffer import SubgoalTestingBuffer

__all__ = [
    "HacSettings",
    "HierarchicalActorCritic",
    "LayerStats",
    "SubgoalTestingBuffer",
    "build_layer_learner",
]
