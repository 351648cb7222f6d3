"""Ant4Rooms: the ant walks to a goal in another room of four (ideas_deep_rl2's Ant4Rooms on official MuJoCo)."""

from ideas_envs.ant_four_rooms.ant_four_rooms_env import Ant4RoomsEnv

__all__ = ["Ant4RoomsEnv"]
