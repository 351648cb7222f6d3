"""AntReacher: the ant walks to an (x, y) goal in an open arena (ideas_deep_rl2's AntReacher on official MuJoCo)."""

from ideas_envs.ant_reacher.ant_reacher_env import AntReacherEnv

__all__ = ["AntReacherEnv"]
