"""Hindsight Experience Replay."""

from ideas_baselines.her.hindsight_replay_buffer import (
    GOAL_SELECTION_STRATEGIES,
    HindsightBatch,
    HindsightReplayBuffer,
)

__all__ = ["GOAL_SELECTION_STRATEGIES", "HindsightBatch", "HindsightReplayBuffer"]
