"""Hook: the Fetch arm pulls a block that lies out of its reach to a goal, using a hook lying on the table."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import mujoco
import numpy as np
from gymnasium.utils import EzPickle

from ideas_envs.fetch_goal_env import TABLE_TOP_Z, FetchGoalEnv

SCENE_XML = files("ideas_envs.hook") / "hook.xml"
BLOCK_HALF = 0.025
HOOK_HALF_HEIGHT = 0.012
# The grip site is kept in this box (x <= 1.55 m), the block starts at x >= 1.7 m: out of reach.
GRIPPER_BOUNDS = (np.array([1.05, 0.4, 0.38]), np.array([1.55, 1.1, 0.9]))
BLOCK_START = (np.array([1.70, 0.75]), np.array([1.80, 0.95]))  # (x, y) box
HOOK_START = (np.array([1.28, 0.50]), np.array([1.34, 0.60]))  # (x, y) box of the handle's centre
GOAL_RANGE = (np.array([1.25, 0.60]), np.array([1.45, 0.90]))  # (x, y) box of the block's goal, within reach
# Where the block can usefully be while the task is solved (from its start to its goal, lifted a bit).
BLOCK_REGION = (np.array([1.15, 0.45, TABLE_TOP_Z]), np.array([1.90, 1.05, TABLE_TOP_Z + 0.15]))


class HookEnv(FetchGoalEnv, EzPickle):
    """Fetch arm must use an L-shaped hook to pull a block from beyond its reach to a goal on the table.

    Registered as ``Hook-o1-v1``. The table is 0.9 m long; the gripper is kept at x <= 1.55 m while the
    block starts at x = 1.70-1.80 m, so only the hook (a 40 cm handle with a 10 cm tip pointing to +y at its
    far end) can bring the block back. A solution: grasp the handle's near end, move the tip behind the
    block, pull, release the hook, then push or carry the block to the goal.

    - Action space: ``Box(-1, 1, (4,), float32)``: gripper displacement (at most 5 cm per step in x, y, z)
      and finger command (see ``FetchGoalEnv``).
    - Observation (``observation``, float64, 40 values): grip position (3), finger positions (2), grip
      velocity (3), finger velocities (2); then for the block and for the hook (handle centre): position
      (3), position relative to the grip (3), orientation as Euler angles (3), velocity relative to the grip
      (3), angular velocity (3); velocities are per step (times 0.04 s).
    - Goal (``achieved_goal``/``desired_goal``, float64, 3 values): the block's position. Desired goals lie
      on the table within reach: x uniform in 1.25-1.45 m, y in 0.60-0.90 m. ``goal_bounds()`` is the
      region the block moves through while the task is solved (from its start to the goal, up to 15 cm over
      the table), for HAC's subgoals.
    - Reward: sparse (default) 0 when the block is within ``distance_threshold`` = 5 cm of the goal, else
      -1; ``reward_type="dense"``: minus the distance. ``info["is_success"]``: within the threshold.
    - Start state: the arm at its start pose, fingers open; the block upright at x 1.70-1.80 m, y
      0.75-0.95 m; the hook flat on the table, parallel to x, its centre at x 1.28-1.34 m, y 0.50-0.60 m
      (all uniform).
    - Episode end: never terminated (continuing task); the registered id truncates after 150 steps.
    - Rendering: ``rgb_array`` (offscreen) or ``human``; a translucent red box marks the goal.
    - Versions: v1, first version on the official ``mujoco`` bindings (ideas_deep_rl2's ``Hook-o1`` ran on
      mujoco-py); v1 keeps the id.

    :param reward_type: ``"sparse"`` or ``"dense"``.
    :param distance_threshold: Distance at which the block counts as at the goal.
    :param kwargs: ``render_mode``, ``width``, ``height`` (see ``MujocoGoalEnv``).
    """

    # What a grasped start (`grasped_start_prob`, ideas_envs/grasped_start.py) puts in the gripper: the hook, at
    # the place on its handle made for the gripper.
    grasped_start = ("hook:joint", "hook_grasp")

    def __init__(self, reward_type: str = "sparse", distance_threshold: float = 0.05, **kwargs: Any) -> None:
        kwargs.setdefault(
            "default_camera_config",
            {"distance": 1.9, "azimuth": 150.0, "elevation": -40.0, "lookat": np.array([1.5, 0.75, 0.4])},
        )
        FetchGoalEnv.__init__(
            self,
            scene_xml=str(SCENE_XML),
            goal_markers=["target_object0"],
            reward_type=reward_type,
            distance_threshold=distance_threshold,
            gripper_bounds=GRIPPER_BOUNDS,
            **kwargs,
        )
        EzPickle.__init__(self, reward_type, distance_threshold, **kwargs)

    def _reset_sim(self) -> bool:
        super()._reset_sim()
        block = self.np_random.uniform(*BLOCK_START)
        hook = self.np_random.uniform(*HOOK_START)
        upright = [1.0, 0.0, 0.0, 0.0]
        self._utils.set_joint_qpos(
            self.model, self.data, "object0:joint", np.array([*block, TABLE_TOP_Z + BLOCK_HALF, *upright])
        )
        self._utils.set_joint_qpos(
            self.model, self.data, "hook:joint", np.array([*hook, TABLE_TOP_Z + HOOK_HALF_HEIGHT, *upright])
        )
        mujoco.mj_forward(self.model, self.data)
        return True

    def _sample_goal(self) -> np.ndarray:
        return np.array([*self.np_random.uniform(*GOAL_RANGE), TABLE_TOP_Z + BLOCK_HALF])

    def goal_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The box the block moves through while the task is solved; HAC bounds its subgoals by it."""
        return BLOCK_REGION[0].copy(), BLOCK_REGION[1].copy()

    def block_position(self) -> np.ndarray:
        """World position of the block's centre, the achieved goal."""
        return self.site_position("object0")

    def _get_obs(self) -> dict[str, np.ndarray]:
        gripper = self._gripper_observation()
        grip_pos, grip_velp = gripper[:3], gripper[5:8]
        features = [gripper] + [self._object_observation(site, grip_pos, grip_velp) for site in ("object0", "hook")]
        return {
            "observation": np.concatenate(features),
            "achieved_goal": self.block_position(),
            "desired_goal": self.goal.copy(),
        }
