"""Gymnasium's ant as a base for our navigation goal envs: reach an (x, y) goal with the torso."""

from __future__ import annotations

from importlib.resources.abc import Traversable
from typing import Any

import numpy as np
from gymnasium.utils import EzPickle

from ideas_envs.mujoco_goal_env import MujocoGoalEnv

# gymnasium's ant.xml standing pose: torso height, upright orientation, hips straight, ankles bent.
ANT_STANDING_QPOS = np.array([0.55, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0, 1.0])
RESET_NOISE = 0.1  # uniform noise on joint positions and normal noise (std) on velocities at reset, as in Ant-v5
ANT_CAMERA = {"distance": 17.0, "azimuth": 90.0, "elevation": -65.0, "lookat": np.array([0.0, -1.0, 0.0])}
# The ant's hull (legs stretched) reaches about 0.8 m from the torso; goals and starts keep this from walls.
WALL_MARGIN = 1.0
# Actuation and integration step of the HAC-era AntReacher/Ant4Rooms scenes (ideas_deep_rl2 / Scilab-RL's
# ant_reacher.xml: gear 16, RK4 at 20 ms) instead of gymnasium's ant.xml (gear 150, 10 ms): with gear 150 random
# actions turn the ant onto its back, with gear 16 they keep it upright.
MOTOR_GEAR = 16.0
TIMESTEP = 0.02
N_SUBSTEPS = 5


class AntGoalEnv(MujocoGoalEnv, EzPickle):
    """Gymnasium's 8-joint ant must bring its torso to an (x, y) goal in a walled scene.

    - Action space: ``Box(-1, 1, (8,), float32)``: torques of the hip and ankle motors in the order of
      gymnasium's ``ant.xml``, with gear 16 (at most 16 N m) as in the HAC-era AntReacher scenes, not
      ``ant.xml``'s 150.
    - Observation (``observation``, float64, 29 values): torso position (x, y, z) and orientation
      (quaternion), 8 joint angles, then torso linear and angular velocity and 8 joint velocities
      (``qpos`` then ``qvel``).
    - Goal (``achieved_goal``/``desired_goal``, float64, 2 values): torso (x, y).
    - Reward: sparse (default) 0 when the torso is within ``distance_threshold`` = 0.5 m of the goal, else
      -1; ``reward_type="dense"``: minus the distance. ``info["is_success"]``: within the threshold.
    - Time: 5 MuJoCo steps of 20 ms (RK4) per env step, 10 env steps per second (the HAC-era scenes also
      used 20 ms steps, but 15-20 of them per action; 5 keeps an env step as cheap as gymnasium's AntMaze).
    - Start: the standing pose of ``ant.xml`` at ``_start_xy()``, joint angles with uniform noise of +-0.1
      and velocities with normal noise of std 0.1.
    - Episode end: never terminated (continuing task, also when the ant flips over); the registered ids
      truncate.
    - Rendering: ``rgb_array`` (offscreen) or ``human``, a translucent red disc of the success radius marks
      the goal.

    Subclasses set ``scene_xml`` (a scene that includes ``gymnasium:ant.xml`` and has a mocap body
    ``target_torso``) and ``goal_reach`` (every goal lies in ``[-goal_reach, goal_reach]^2``), and implement
    ``_start_xy`` and ``_sample_goal``.

    :param reward_type: ``"sparse"`` or ``"dense"``.
    :param distance_threshold: Torso distance to the goal at which it counts as reached.
    :param kwargs: ``render_mode``, ``width``, ``height`` (see ``MujocoGoalEnv``).
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 10}
    scene_xml: Traversable
    goal_reach: float

    def __init__(self, reward_type: str = "sparse", distance_threshold: float = 0.5, **kwargs: Any) -> None:
        EzPickle.__init__(self, reward_type, distance_threshold, **kwargs)
        kwargs.setdefault("default_camera_config", ANT_CAMERA)
        super().__init__(
            scene_xml=str(self.scene_xml),
            goal_markers=["target_torso"],
            part_dim=2,
            distance_threshold=distance_threshold,
            reward_type=reward_type,
            initial_qpos={},
            n_actions=8,
            n_substeps=N_SUBSTEPS,
            **kwargs,
        )

    def _initialize_simulation(self) -> None:
        super()._initialize_simulation()
        self.model.actuator_gear[:, 0] = MOTOR_GEAR
        self.model.opt.timestep = TIMESTEP

    def _start_xy(self) -> np.ndarray:
        """Where the torso starts in this episode (x, y)."""
        raise NotImplementedError

    def _set_action(self, action: np.ndarray) -> None:
        self.data.ctrl[:] = action

    def _reset_sim(self) -> bool:
        super()._reset_sim()
        noise = self.np_random.uniform(-RESET_NOISE, RESET_NOISE, size=self.model.nq - 7)
        self.data.qpos[:2] = self._start_xy()
        self.data.qpos[2:] = ANT_STANDING_QPOS
        self.data.qpos[7:] += noise
        self.data.qvel[:] = RESET_NOISE * self.np_random.standard_normal(self.model.nv)
        self._mujoco.mj_forward(self.model, self.data)
        return True

    def torso_xy(self) -> np.ndarray:
        """The torso's (x, y), the achieved goal."""
        return self.data.qpos[:2].copy()

    def is_upright(self) -> bool:
        """Whether the torso's z axis points upwards (the ant is not on its back)."""
        _, x, y, _ = self.data.qpos[3:7]
        return bool(1.0 - 2.0 * (x * x + y * y) > 0.0)

    def goal_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The (x, y) box every desired goal lies in; HAC bounds its subgoals by it."""
        return np.full(2, -self.goal_reach), np.full(2, self.goal_reach)

    def _get_obs(self) -> dict[str, np.ndarray]:
        return {
            "observation": np.concatenate([self.data.qpos, self.data.qvel]),
            "achieved_goal": self.torso_xy(),
            "desired_goal": self.goal.copy(),
        }
