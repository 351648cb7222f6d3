"""SAC with a fused gradient step, and the env wrapper that overlaps it with the env step."""

from ideas_baselines.sac.fused_sac import FusedSAC
from ideas_baselines.sac.overlap import TrainWhileStepping

__all__ = ["FusedSAC", "TrainWhileStepping"]
