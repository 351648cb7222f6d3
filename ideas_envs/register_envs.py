"""Registers every env of ideas_envs with gymnasium; imported by the env factory so `env=<id>` just works.

Entry points are strings, so registering imports no simulator code; an env module loads on `gym.make`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

BLOCKS_GRIPPER_GOALS = ("above", "random", "none")
BLOCKS_MAX_OBJECTS = 4


def _register(env_id: str, entry_point: str, max_episode_steps: int, kwargs: dict[str, Any]) -> None:
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_episode_steps, kwargs=kwargs)


def blocks_variants() -> list[tuple[str, int, str]]:
    """(id, n_objects, gripper_goal) of every Blocks id; ``o0`` has no ``none`` variant (it would have no goal)."""
    return [
        (f"Blocks-o{n}-gripper_{goal}-v1", n, goal)
        for n in range(BLOCKS_MAX_OBJECTS + 1)
        for goal in BLOCKS_GRIPPER_GOALS
        if not (n == 0 and goal == "none")
    ]


def register_all() -> None:
    """Register our env ids (idempotent: an id already in the registry is left alone)."""
    _register("BitFlipping-v0", "ideas_envs.bit_flipping.bit_flipping_env:BitFlippingEnv", 10, {"n_bits": 10})
    for env_id, n_objects, gripper_goal in blocks_variants():
        # 50 steps per subtask (each block, plus the gripper), as in ideas_deep_rl2.
        _register(
            env_id,
            "ideas_envs.blocks.blocks_env:BlocksEnv",
            50 * (n_objects + 1),
            {"n_objects": n_objects, "gripper_goal": gripper_goal},
        )
    for n_buttons in (1, 2):
        # 50 steps per button and 50 for the goal region, like the Blocks ids.
        _register(
            f"ButtonUnlock-o{n_buttons}-v1",
            "ideas_envs.button_unlock.button_unlock_env:ButtonUnlockEnv",
            50 * (n_buttons + 1),
            {"n_buttons": n_buttons},
        )
    _register("Hook-o1-v1", "ideas_envs.hook.hook_env:HookEnv", 150, {})
    _register("AntReacher-v1", "ideas_envs.ant_reacher.ant_reacher_env:AntReacherEnv", 500, {})
    _register("Ant4Rooms-v1", "ideas_envs.ant_four_rooms.ant_four_rooms_env:Ant4RoomsEnv", 700, {})


register_all()
