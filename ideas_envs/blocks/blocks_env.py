"""Blocks: the Fetch arm stacks N blocks into a tower at a sampled place on the table."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from importlib.resources import files
from typing import Any

import mujoco
import numpy as np
from gymnasium.utils import EzPickle

from ideas_envs.fetch_goal_env import TABLE_TOP_Z, FetchGoalEnv
from ideas_envs.mujoco_goal_env import remove_named

SCENE_XML = files("ideas_envs.blocks") / "blocks.xml"
MAX_BLOCKS = 4
BLOCK_SIZE = 0.05  # edge length of a block
GRIPPER_GOALS = ("above", "random", "none")
SPAWN_RANGE = 0.15  # blocks and tower place: within this of the gripper's start, in x and y
MIN_SPACING = 0.08  # between any two start blocks and between a start block and the tower place
ABOVE_CLEARANCE = 0.06  # gripper target of "above": this high over the tower's top face
RANDOM_HEIGHT = (0.03, 0.3)  # gripper target of "random": this high over the tower's top face


class BlocksEnv(FetchGoalEnv, EzPickle):
    """Fetch arm stacks ``n_objects`` blocks into a tower at a goal place; optionally a gripper target too.

    Registered as ``Blocks-o{N}-gripper_{above,random,none}-v1``, N = 0..4 (``o0`` has no ``none`` variant:
    without blocks and without gripper target there is no goal; ``Blocks-o0-*`` is gripper reaching).

    - Action space: ``Box(-1, 1, (4,), float32)``: gripper displacement (at most 5 cm per step in x, y, z)
      and finger command (see ``FetchGoalEnv``).
    - Observation (``observation``, float64, ``10 + 15 N`` values): grip position (3), finger positions (2),
      grip velocity (3), finger velocities (2); then per block: position (3), position relative to the grip
      (3), orientation as Euler angles (3), velocity relative to the grip (3), angular velocity (3);
      velocities are per step (times 0.04 s).
    - Goal (``achieved_goal``/``desired_goal``, float64, ``3 N + 3`` values, ``3 N`` for ``none``): the
      positions of block 0..N-1 (block 0 at the bottom of the tower, each next one 5 cm higher), then the
      grip position. The tower place is drawn uniformly within 15 cm (x, y) of the gripper's start; the
      gripper target is ``above``: 6 cm over the tower's top face at the tower place; ``random``: uniform
      within 15 cm (x, y) of the gripper's start and 3-30 cm over the tower's top face (over the table for
      N = 0); ``none``: no gripper target.
    - Reward: sparse (default) 0 when every goal part (each block, the gripper) is within
      ``distance_threshold`` = 5 cm of its target, else -1; ``reward_type="dense"``: minus the sum of the
      part distances. ``compute_reward`` is vectorised over batches. ``info["is_success"]``: every part reached.
    - Start state: the arm at its start pose with the grip 20 cm above the default Fetch pose (about 13 cm
      over the table), fingers open; blocks upright on the table at uniform random places within 15 cm of
      the gripper's start, at least 8 cm apart from each other and from the tower place.
    - Episode end: never terminated (continuing task); the registered ids truncate after ``50 * (N + 1)``
      steps (ideas_deep_rl2 used 50 steps per block-and-gripper subtask).
    - Rendering: ``rgb_array`` (offscreen) or ``human``; translucent boxes mark each block's target in the
      block's colour, a magenta sphere the gripper target.
    - Versions: v1, first version on the official ``mujoco`` bindings (ideas_deep_rl2's ``Blocks`` ids ran on
      mujoco-py); v1 keeps the id scheme.

    :param n_objects: Number of blocks, 0..4.
    :param gripper_goal: ``"above"``, ``"random"`` or ``"none"`` (needs ``n_objects >= 1``).
    :param reward_type: ``"sparse"`` or ``"dense"``.
    :param distance_threshold: Distance at which a block or the gripper counts as at its target.
    :param kwargs: ``render_mode``, ``width``, ``height`` (see ``MujocoGoalEnv``).
    """

    def __init__(
        self,
        n_objects: int = 1,
        gripper_goal: str = "above",
        reward_type: str = "sparse",
        distance_threshold: float = 0.05,
        **kwargs: Any,
    ) -> None:
        if not 0 <= n_objects <= MAX_BLOCKS:
            raise ValueError(f"n_objects must be in 0..{MAX_BLOCKS}, got {n_objects}")
        if gripper_goal not in GRIPPER_GOALS:
            raise ValueError(f"gripper_goal must be one of {GRIPPER_GOALS}, got {gripper_goal!r}")
        if n_objects == 0 and gripper_goal == "none":
            raise ValueError("n_objects=0 needs a gripper goal ('above' or 'random'): otherwise there is no goal")
        self.n_objects = n_objects
        self.gripper_goal = gripper_goal
        self.blocks = [f"object{i}" for i in range(n_objects)]
        self.tower_xy = np.zeros(2)
        goal_markers = [f"target_{block}" for block in self.blocks]
        if gripper_goal != "none":
            goal_markers.append("target_gripper")
        FetchGoalEnv.__init__(
            self,
            scene_xml=str(SCENE_XML),
            goal_markers=goal_markers,
            reward_type=reward_type,
            distance_threshold=distance_threshold,
            **kwargs,
        )
        EzPickle.__init__(self, n_objects, gripper_goal, reward_type, distance_threshold, **kwargs)

    def _edit_scene(self, root: ET.Element) -> None:
        unused = {f"object{i}" for i in range(self.n_objects, MAX_BLOCKS)}
        unused |= {f"target_{name}" for name in unused}
        if self.gripper_goal == "none":
            unused.add("target_gripper")
        remove_named(root, unused)

    def _reset_sim(self) -> bool:
        super()._reset_sim()
        center = self.initial_gripper_xpos[:2]
        while True:
            places = center + self.np_random.uniform(-SPAWN_RANGE, SPAWN_RANGE, size=(self.n_objects + 1, 2))
            gaps = np.linalg.norm(places[:, None] - places[None], axis=-1) + np.eye(len(places))
            if gaps.min() >= MIN_SPACING:
                break
        self.tower_xy = places[0]
        for block, xy in zip(self.blocks, places[1:], strict=True):
            qpos = np.array([xy[0], xy[1], TABLE_TOP_Z + BLOCK_SIZE / 2, 1.0, 0.0, 0.0, 0.0])
            self._utils.set_joint_qpos(self.model, self.data, f"{block}:joint", qpos)
        mujoco.mj_forward(self.model, self.data)
        return True

    def _sample_goal(self) -> np.ndarray:
        tower_top = TABLE_TOP_Z + BLOCK_SIZE * self.n_objects
        parts = [np.array([*self.tower_xy, TABLE_TOP_Z + BLOCK_SIZE * (i + 0.5)]) for i in range(self.n_objects)]
        if self.gripper_goal == "above":
            parts.append(np.array([*self.tower_xy, tower_top + ABOVE_CLEARANCE]))
        elif self.gripper_goal == "random":
            xy = self.initial_gripper_xpos[:2] + self.np_random.uniform(-SPAWN_RANGE, SPAWN_RANGE, size=2)
            parts.append(np.array([*xy, tower_top + self.np_random.uniform(*RANDOM_HEIGHT)]))
        return np.concatenate(parts)

    def goal_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The box every desired goal lies in, (x, y, z) per goal part; HAC bounds its subgoals by it."""
        center = self.initial_gripper_xpos[:2]
        top = TABLE_TOP_Z + BLOCK_SIZE * self.n_objects + max(ABOVE_CLEARANCE, RANDOM_HEIGHT[1])
        n_parts = self.observation_space["desired_goal"].shape[0] // 3
        low = np.array([*(center - SPAWN_RANGE), TABLE_TOP_Z])
        high = np.array([*(center + SPAWN_RANGE), top])
        return np.tile(low, n_parts), np.tile(high, n_parts)

    def _achieved_goal(self) -> np.ndarray:
        parts = [self.site_position(block) for block in self.blocks]
        if self.gripper_goal != "none":
            parts.append(self.grip_position())
        return np.concatenate(parts) if parts else np.zeros(0)

    def _get_obs(self) -> dict[str, np.ndarray]:
        gripper = self._gripper_observation()
        grip_pos, grip_velp = gripper[:3], gripper[5:8]
        features = [gripper]
        features += [self._object_observation(block, grip_pos, grip_velp) for block in self.blocks]
        return {
            "observation": np.concatenate(features),
            "achieved_goal": self._achieved_goal(),
            "desired_goal": self.goal.copy(),
        }
