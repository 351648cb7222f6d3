"""SAC with a fused gradient step that can overlap the env step of a subprocess env."""

from ideas_baselines.sac.fused_sac import FusedSAC

__all__ = ["FusedSAC"]
