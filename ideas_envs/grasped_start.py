"""Start a share of a Fetch task's episodes with an object (the block, or a tool) already held in the gripper.

Goals in the air (half of FetchPickAndPlace's) pay only once the block is lifted, and a policy that has never held
it rarely lifts it by chance; the table half is learned long before. Starting some training episodes from a grasp
lets hindsight relabelling see lifted and carried blocks early, and the value of holding the block then leads the
policy to grasping from the task's own start (the exploration aid of the HER paper, which started half of its
pick-and-place training episodes from one grasped state). It changes the task's start distribution, so it belongs on
training envs only: a test must start where the task starts.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

FINGER_JOINTS = ("robot0:r_gripper_finger_joint", "robot0:l_gripper_finger_joint")
# gymnasium-robotics' Fetch tasks hold their block at its centre, where its site is.
FETCH_OBJECT_GRASP = ("object0:joint", "object0")
OPEN_FINGER = 0.04  # per finger: an 8 cm opening around the 5 cm block
# Env steps of a closing command, the object held in place meanwhile (a thin handle would fall out of fingers
# that take several steps to reach it), then steps with the object free, in which the fingers alone hold it.
CLOSE_STEPS = 5
SETTLE_STEPS = 2
CLOSE_ACTION = np.array([0.0, 0.0, 0.0, -1.0])
SIMULATION_API = ("_utils", "_set_action", "_mujoco_step", "_step_callback", "_get_obs")


def grasp_point(env: gym.Env) -> tuple[str, str] | None:
    """What `env` can start holding, or None: the free joint of the object and the object's site that goes
    between the fingers. An env names them in a `grasped_start` attribute (ours: Hook's handle);
    gymnasium-robotics' Fetch tasks with an object and a gripper that opens hold their block."""
    base = env.unwrapped
    if not all(hasattr(base, name) for name in SIMULATION_API) or getattr(base, "block_gripper", True):
        return None
    declared = getattr(base, "grasped_start", None)
    if declared is not None:
        return declared
    return FETCH_OBJECT_GRASP if getattr(base, "has_object", False) else None


def can_start_grasped(env: gym.Env) -> bool:
    """Whether `env` has an object to hold and a gripper that opens (see :func:`grasp_point`)."""
    return grasp_point(env) is not None


class GraspedStart(gym.Wrapper):
    """With probability `prob`, reset places the object upright with its grasp point between the open fingers at
    the gripper's start position and closes them on it; the returned observation (and the episode's goal, sampled
    as usual) follow.

    The episode's step budget is untouched: the closing steps run the simulation before the first observation.
    """

    def __init__(self, env: gym.Env, prob: float) -> None:
        point = grasp_point(env)
        if point is None:
            raise ValueError(f"{env.unwrapped} has no object to hold or no gripper that opens")
        super().__init__(env)
        self.prob = prob
        self.joint, self.site = point

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """The task's reset, then (with probability `prob`, drawn from the env's own generator) a grasp."""
        obs, info = self.env.reset(**kwargs)
        base = self.env.unwrapped
        if base.np_random.random() < self.prob:
            obs = self._grasp(base)
        return obs, info

    def _grasp(self, base: Any) -> Any:
        model, data, utils = base.model, base.data, base._utils
        for joint in FINGER_JOINTS:
            utils.set_joint_qpos(model, data, joint, OPEN_FINGER)
        pose = utils.get_joint_qpos(model, data, self.joint).copy()
        site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, self.site)
        pose[:3] = utils.get_site_xpos(model, data, "robot0:grip") - model.site_pos[site]  # upright: frames align
        pose[3:] = (1.0, 0.0, 0.0, 0.0)
        for step in range(CLOSE_STEPS + SETTLE_STEPS):
            if step < CLOSE_STEPS:
                utils.set_joint_qpos(model, data, self.joint, pose)
                utils.set_joint_qvel(model, data, self.joint, np.zeros(6))
                mujoco.mj_forward(model, data)
            base._set_action(CLOSE_ACTION)
            base._mujoco_step(CLOSE_ACTION)
            base._step_callback()
        return base._get_obs()
