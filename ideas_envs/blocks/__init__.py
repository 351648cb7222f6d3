"""Blocks: the Fetch arm stacks blocks into a tower (ideas_deep_rl2's Blocks envs on official MuJoCo)."""

from ideas_envs.blocks.blocks_env import BlocksEnv

__all__ = ["BlocksEnv"]
