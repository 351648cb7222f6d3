"""ButtonUnlock: the Fetch arm presses every button on the table, which unlocks a goal region it then reaches."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from importlib.resources import files
from typing import Any

import mujoco
import numpy as np
from gymnasium.utils import EzPickle

from ideas_envs.fetch_goal_env import TABLE_TOP_Z, FetchGoalEnv
from ideas_envs.mujoco_goal_env import goal_part_distances, remove_named

SCENE_XML = files("ideas_envs.button_unlock") / "button_unlock.xml"
MAX_BUTTONS = 2
PRESS_DEPTH = 0.008  # a button counts as pressed once its cap is this far down (of 1.5 cm travel)
BUTTON_RANGE = (np.array([1.15, 0.50]), np.array([1.45, 1.00]))  # (x, y) box of the button centres
MIN_BUTTON_SPACING = 0.15
GOAL_HEIGHT = (0.1, 0.3)  # goal region centre: this high over the table
GOAL_SPREAD = 0.15  # goal region centre: within this of the gripper's start, in x and y
UNPRESSED_RGBA = np.array([0.85, 0.15, 0.15, 1.0])
PRESSED_RGBA = np.array([0.15, 0.75, 0.2, 1.0])
LOCKED_RGBA = np.array([1.0, 0.55, 0.0, 0.5])
UNLOCKED_RGBA = np.array([0.15, 0.75, 0.2, 0.5])


class ButtonUnlockEnv(FetchGoalEnv, EzPickle):
    """Fetch arm must press ``n_buttons`` push buttons; that unlocks a goal region its gripper must then reach.

    Registered as ``ButtonUnlock-o1-v1`` and ``ButtonUnlock-o2-v1`` (1 or 2 buttons, any order). A button is
    pressed when its cap is pushed 8 mm down (of 1.5 cm travel, e.g. by the gripper from above); it stays
    pressed ("latched") for the rest of the episode. The goal holds the latches, so rewards stay a function
    of achieved and desired goal (HER can relabel) and reaching the region before pressing every button
    does not count.

    - Action space: ``Box(-1, 1, (4,), float32)``: gripper displacement (at most 5 cm per step in x, y, z)
      and finger command (see ``FetchGoalEnv``).
    - Observation (``observation``, float64, ``10 + 8 N`` values): grip position (3), finger positions (2),
      grip velocity (3), finger velocities (2); then per button: cap position (3), cap position relative to
      the grip (3), how far the cap is pushed down (1, metres), latch (1, 0.0 or 1.0).
    - Goal (``achieved_goal``/``desired_goal``, float64, ``3 + N`` values): grip position, then one latch
      per button. The desired goal is the goal region's centre, uniform within 15 cm (x, y) of the
      gripper's start and 10-30 cm over the table, and every latch 1.0. ``goal_bounds()`` gives that box
      and [0, 1] per latch, for HAC's subgoals.
    - Reward: sparse (default) 0 when the grip is within ``distance_threshold`` = 5 cm of the region's
      centre and every latch equals the desired one, else -1; ``reward_type="dense"``: minus (the grip
      distance plus the number of differing latches). ``info["is_success"]``: sparse reward 0.
    - Start state: the arm at its start pose with the grip about 13 cm over the table, fingers open,
      buttons unpressed at uniform places (x 1.15-1.45 m, y 0.5-1.0 m, at least 15 cm apart).
    - Episode end: never terminated (continuing task); the registered ids truncate after ``50 (N + 1)``
      steps (50 per button and 50 for the region).
    - Rendering: ``rgb_array`` (offscreen) or ``human``; button caps are red, green once pressed; a
      translucent sphere of the success radius marks the goal region, orange while locked, green unlocked.
    - Versions: v1, first version on the official ``mujoco`` bindings (ideas_deep_rl2's ``ButtonUnlock`` ids
      ran on mujoco-py); v1 keeps the ids.

    :param n_buttons: Number of buttons, 1 or 2.
    :param reward_type: ``"sparse"`` or ``"dense"``.
    :param distance_threshold: Grip distance to the region's centre at which it counts as inside.
    :param kwargs: ``render_mode``, ``width``, ``height`` (see ``MujocoGoalEnv``).
    """

    def __init__(
        self, n_buttons: int = 1, reward_type: str = "sparse", distance_threshold: float = 0.05, **kwargs: Any
    ) -> None:
        if not 1 <= n_buttons <= MAX_BUTTONS:
            raise ValueError(f"n_buttons must be in 1..{MAX_BUTTONS}, got {n_buttons}")
        self.n_buttons = n_buttons
        self.buttons = [f"button{i}" for i in range(n_buttons)]
        self.latches = np.zeros(n_buttons)
        FetchGoalEnv.__init__(
            self,
            scene_xml=str(SCENE_XML),
            goal_markers=["target_gripper"],
            reward_type=reward_type,
            distance_threshold=distance_threshold,
            **kwargs,
        )
        EzPickle.__init__(self, n_buttons, reward_type, distance_threshold, **kwargs)

    def _edit_scene(self, root: ET.Element) -> None:
        remove_named(root, {f"button{i}" for i in range(self.n_buttons, MAX_BUTTONS)})

    def _env_setup(self, initial_qpos: dict[str, Any]) -> None:
        super()._env_setup(initial_qpos)
        self._press_qpos = [self.model.joint(f"{button}:press").qposadr[0] for button in self.buttons]

    def press_depths(self) -> np.ndarray:
        """How far each button's cap is pushed down (metres, >= 0)."""
        return -self.data.qpos[self._press_qpos]

    def _reset_sim(self) -> bool:
        super()._reset_sim()
        while True:
            places = self.np_random.uniform(*BUTTON_RANGE, size=(self.n_buttons, 2))
            gaps = np.linalg.norm(places[:, None] - places[None], axis=-1) + np.eye(self.n_buttons)
            if gaps.min() >= MIN_BUTTON_SPACING:
                break
        for button, xy in zip(self.buttons, places, strict=True):
            self.model.body(button).pos = [*xy, TABLE_TOP_Z]
        self.latches = np.zeros(self.n_buttons)
        mujoco.mj_forward(self.model, self.data)
        return True

    def _step_callback(self) -> None:
        super()._step_callback()
        self.latches = np.maximum(self.latches, self.press_depths() >= PRESS_DEPTH)

    def _sample_goal(self) -> np.ndarray:
        xy = self.initial_gripper_xpos[:2] + self.np_random.uniform(-GOAL_SPREAD, GOAL_SPREAD, size=2)
        z = TABLE_TOP_Z + self.np_random.uniform(*GOAL_HEIGHT)
        return np.array([*xy, z, *np.ones(self.n_buttons)])

    def part_distances(self, achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
        """Grip distance to the region's centre, then per latch 0 if it equals the desired latch, else 1."""
        achieved, desired = np.asarray(achieved_goal), np.asarray(desired_goal)
        grip = goal_part_distances(achieved[..., :3], desired[..., :3], 3)
        latches = np.abs(np.round(achieved[..., 3:]) - np.round(desired[..., 3:]))
        return np.concatenate([grip, latches], axis=-1)

    def goal_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The box every desired goal lies in (grip position, then [0, 1] per latch); HAC bounds subgoals by it."""
        center = self.initial_gripper_xpos[:2]
        low = [*(center - GOAL_SPREAD), TABLE_TOP_Z + GOAL_HEIGHT[0], *np.zeros(self.n_buttons)]
        high = [*(center + GOAL_SPREAD), TABLE_TOP_Z + GOAL_HEIGHT[1], *np.ones(self.n_buttons)]
        return np.array(low), np.array(high)

    def button_position(self, index: int) -> np.ndarray:
        """World position of button ``index``'s cap centre."""
        return self.site_position(self.buttons[index])

    def _get_obs(self) -> dict[str, np.ndarray]:
        gripper = self._gripper_observation()
        grip_pos = gripper[:3]
        features = [gripper]
        for index, (depth, latch) in enumerate(zip(self.press_depths(), self.latches, strict=True)):
            cap = self.button_position(index)
            features.append(np.array([*cap, *(cap - grip_pos), depth, latch]))
        return {
            "observation": np.concatenate(features),
            "achieved_goal": np.concatenate([self.grip_position(), self.latches]),
            "desired_goal": self.goal.copy(),
        }

    def _render_callback(self) -> None:
        for button, latch in zip(self.buttons, self.latches, strict=True):
            self.model.geom(button).rgba = PRESSED_RGBA if latch else UNPRESSED_RGBA
        self.model.site("target_gripper").rgba = UNLOCKED_RGBA if self.latches.all() else LOCKED_RGBA
        super()._render_callback()
