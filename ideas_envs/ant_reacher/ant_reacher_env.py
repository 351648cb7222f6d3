"""AntReacher: the ant walks to an (x, y) goal in an open walled arena."""

from __future__ import annotations

from importlib.resources import files

import numpy as np

from ideas_envs.ant_goal_env import WALL_MARGIN, AntGoalEnv

SCENE_XML = files("ideas_envs.ant_reacher") / "ant_reacher.xml"
ARENA_HALF_SIZE = 5.0  # inner faces of the walls at x, y = +-5 m (see ant_reacher.xml)


class AntReacherEnv(AntGoalEnv):
    """The ant brings its torso to an (x, y) goal in a 10 m x 10 m walled arena without obstacles.

    Registered as ``AntReacher-v1``.

    - Action space: ``Box(-1, 1, (8,), float32)``, the ant's motor torques (see ``AntGoalEnv``).
    - Observation (float64, 29 values): the ant's ``qpos`` (15, torso x, y, z first) and ``qvel`` (14).
    - Goal (float64, 2 values): torso (x, y); desired goals are uniform in ``[-4, 4]^2`` (1 m from the
      walls), ``goal_bounds()`` returns that box.
    - Reward: sparse (default) 0 within 0.5 m of the goal, else -1; ``reward_type="dense"``: minus the
      distance. ``info["is_success"]``: within 0.5 m.
    - Start state: standing in the arena's centre with small joint noise (see ``AntGoalEnv``).
    - Episode end: never terminated; the registered id truncates after 500 steps (50 s of simulated time).
    - Rendering: a translucent red disc of 0.5 m radius marks the goal.
    - Versions: v1, first version on the official ``mujoco`` bindings and gymnasium's ``ant.xml``
      (ideas_deep_rl2's AntReacher ran on mujoco-py); v1 keeps that id. Version history: the first v1 kept
      ``ant.xml``'s gear-150 motors and 10 ms steps (0.05 s per env step), under which random actions flip the
      ant onto its back; v1 now has the original scene's gear 16 and 20 ms steps (0.1 s per env step, see
      ``AntGoalEnv``), under which they do not (docs/results/environments.md has the measurements).

    Constructor parameters (``reward_type``, ``distance_threshold``, rendering): see ``AntGoalEnv``.
    """

    scene_xml = SCENE_XML
    goal_reach = ARENA_HALF_SIZE - WALL_MARGIN

    def _start_xy(self) -> np.ndarray:
        return np.zeros(2)

    def _sample_goal(self) -> np.ndarray:
        return self.np_random.uniform(-self.goal_reach, self.goal_reach, size=2)
