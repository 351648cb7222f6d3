"""Start a share of a Fetch task's episodes with its object already held in the gripper.

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
import numpy as np

FINGER_JOINTS = ("robot0:r_gripper_finger_joint", "robot0:l_gripper_finger_joint")
OBJECT_JOINT = "object0:joint"
OPEN_FINGER = 0.04  # per finger: a 8 cm opening around the 5 cm block
CLOSE_STEPS = 5  # env steps of a closing command: the fingers settle on the block, the arm does not move
CLOSE_ACTION = np.array([0.0, 0.0, 0.0, -1.0])


def can_start_grasped(env: gym.Env) -> bool:
    """Whether `env` is a gymnasium-robotics Fetch task with an object and a gripper that opens."""
    base = env.unwrapped
    return (
        bool(getattr(base, "has_object", False))
        and not getattr(base, "block_gripper", True)
        and all(hasattr(base, name) for name in ("_utils", "_mujoco", "_set_action", "_mujoco_step", "_get_obs"))
    )


class GraspedStart(gym.Wrapper):
    """With probability `prob`, reset places the object between the open fingers at the gripper's start position
    and closes them on it; the returned observation (and the episode's goal, sampled as usual) follow.

    The episode's step budget is untouched: the closing steps run the simulation before the first observation.
    """

    def __init__(self, env: gym.Env, prob: float) -> None:
        if not can_start_grasped(env):
            raise ValueError(f"{env.unwrapped} has no object or no gripper that opens")
        super().__init__(env)
        self.prob = prob

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """The task's reset, then (with probability `prob`, drawn from the env's own generator) a grasp."""
        obs, info = self.env.reset(**kwargs)
        base = self.env.unwrapped
        if base.np_random.random() < self.prob:
            obs = self._grasp(base)
        return obs, info

    @staticmethod
    def _grasp(base: Any) -> Any:
        model, data, utils = base.model, base.data, base._utils
        for joint in FINGER_JOINTS:
            utils.set_joint_qpos(model, data, joint, OPEN_FINGER)
        pose = utils.get_joint_qpos(model, data, OBJECT_JOINT).copy()
        pose[:3] = utils.get_site_xpos(model, data, "robot0:grip")
        pose[3:] = (1.0, 0.0, 0.0, 0.0)
        utils.set_joint_qpos(model, data, OBJECT_JOINT, pose)
        utils.set_joint_qvel(model, data, OBJECT_JOINT, np.zeros(6))
        base._mujoco.mj_forward(model, data)
        for _ in range(CLOSE_STEPS):
            base._set_action(CLOSE_ACTION)
            base._mujoco_step(CLOSE_ACTION)
            base._step_callback()
        return base._get_obs()
