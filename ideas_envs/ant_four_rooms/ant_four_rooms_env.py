"""Ant4Rooms: the ant walks to an (x, y) goal in another room of a four-room layout."""

from __future__ import annotations

from importlib.resources import files

import numpy as np

from ideas_envs.ant_goal_env import WALL_MARGIN, AntGoalEnv

SCENE_XML = files("ideas_envs.ant_four_rooms") / "ant_four_rooms.xml"
ROOM_SIZE = 6.0  # each room spans 0..6 m from the middle in x and y (see ant_four_rooms.xml)
WALL_HALF_THICKNESS = 0.15
# Rooms by the signs of their (x, y) corner: NE, NW, SW, SE.
ROOMS = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
START_NOISE = 0.5  # the start is uniform within this of the room's centre, in x and y


def room_of(xy: np.ndarray) -> np.ndarray:
    """Index into ``ROOMS`` of the room that holds each (x, y) (last axis); works on batches."""
    signs = np.where(np.asarray(xy) >= 0.0, 1.0, -1.0)
    return np.argmax((signs[..., None, :] == ROOMS).all(axis=-1), axis=-1)


def doorway(room_a: int, room_b: int) -> np.ndarray:
    """Centre (x, y) of the doorway between two rooms that share a wall."""
    a, b = ROOMS[room_a], ROOMS[room_b]
    if (a == b).sum() != 1:
        raise ValueError(f"rooms {room_a} and {room_b} share no wall")
    return np.where(a == b, a * ROOM_SIZE / 2, 0.0)


class Ant4RoomsEnv(AntGoalEnv):
    """The ant brings its torso to an (x, y) goal in another room of a 12 m x 12 m four-room layout.

    Registered as ``Ant4Rooms-v1``. Walls along x = 0 and y = 0 split the square into four 6 m x 6 m rooms
    (NE, NW, SW, SE); neighbouring rooms connect through a 2 m wide doorway 2-4 m from the middle, the
    diagonal room is two doorways away.

    - Action space: ``Box(-1, 1, (8,), float32)``, the ant's motor torques (see ``AntGoalEnv``).
    - Observation (float64, 29 values): the ant's ``qpos`` (15, torso x, y, z first) and ``qvel`` (14).
    - Goal (float64, 2 values): torso (x, y). The desired goal is uniform in one of the three rooms the ant
      does not start in (room drawn uniformly), 1 m from its walls; ``goal_bounds()`` is ``[-5, 5]^2``.
    - Reward: sparse (default) 0 within 0.5 m of the goal, else -1; ``reward_type="dense"``: minus the
      straight-line distance (walls ignored). ``info["is_success"]``: within 0.5 m.
    - Start state: standing within 0.5 m (x, y) of the centre of a uniformly drawn room, small joint noise
      (see ``AntGoalEnv``).
    - Episode end: never terminated; the registered id truncates after 700 steps (70 s of simulated time).
    - Rendering: a translucent red disc of 0.5 m radius marks the goal.
    - Versions: v1, first version on the official ``mujoco`` bindings and gymnasium's ``ant.xml``
      (ideas_deep_rl2's Ant4Rooms ran on mujoco-py); v1 keeps that id. Version history: the first v1 kept
      ``ant.xml``'s gear-150 motors and 10 ms steps (0.05 s per env step); v1 now has the
      original scenes' gear 16 and 20 ms steps (0.1 s per env step, see ``AntGoalEnv``).

    Constructor parameters (``reward_type``, ``distance_threshold``, rendering): see ``AntGoalEnv``.
    """

    scene_xml = SCENE_XML
    goal_reach = ROOM_SIZE - WALL_MARGIN
    start_room = 0  # index into ROOMS of the room this episode started in

    def _start_xy(self) -> np.ndarray:
        self.start_room = int(self.np_random.integers(len(ROOMS)))
        centre = ROOMS[self.start_room] * ROOM_SIZE / 2
        return centre + self.np_random.uniform(-START_NOISE, START_NOISE, size=2)

    def _sample_goal(self) -> np.ndarray:
        others = [room for room in range(len(ROOMS)) if room != self.start_room]
        room = others[int(self.np_random.integers(len(others)))]
        inner = WALL_HALF_THICKNESS + WALL_MARGIN
        return ROOMS[room] * self.np_random.uniform(inner, ROOM_SIZE - WALL_MARGIN, size=2)
