"""Scripted solvers for our goal envs, written from each env's own state (not learned).

They prove that a task is solvable within its episode limit and that its success test fires (tests/), and give
the success rates in docs/results/environments.md (experiment/benchmarks/benchmark_envs.py). The ants walk with an open-loop gait
steered by picking one of its four turned copies (``AntGaitWalker``); ``TorsoDriver`` instead pushes the torso with
an external force, which proves that goals are reachable in time whatever the gait.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

import ideas_envs.register_envs  # noqa: F401  (scripted_success makes envs by id)
from ideas_envs.ant_four_rooms.ant_four_rooms_env import ROOM_SIZE, ROOMS, Ant4RoomsEnv, doorway, room_of
from ideas_envs.ant_goal_env import AntGoalEnv
from ideas_envs.blocks.blocks_env import BlocksEnv
from ideas_envs.button_unlock.button_unlock_env import ButtonUnlockEnv
from ideas_envs.fetch_goal_env import FetchGoalEnv
from ideas_envs.hook.hook_env import HookEnv


def aim_action(env: FetchGoalEnv, target: np.ndarray, fingers: float) -> np.ndarray:
    """Fetch action moving the grip towards ``target`` (proportional, saturating 7 cm away) with a finger command."""
    move = np.clip((target - env.grip_position()) * 15.0, -1.0, 1.0)
    return np.array([*move, fingers])


class ScriptedStacker:
    """Pick-and-place solver for Blocks: reads block and goal positions from the env.

    For each block in goal order: hover over it, descend, close, lift, carry over its tower slot, lower,
    open, rise; then move the gripper to its target. Proportional control on the grip position.
    """

    def __init__(self, env: BlocksEnv) -> None:
        self.env = env
        self.block = 0
        self.phase = 0
        self.wait = 0

    def __call__(self) -> np.ndarray:
        env = self.env
        grip = env.grip_position()
        goal = env.goal.reshape(-1, 3)
        safe_z = goal[: env.n_objects, 2].max(initial=0.4) + 0.08
        if self.block == env.n_objects:
            target = goal[env.n_objects] if env.gripper_goal != "none" else grip
            return aim_action(env, target, 1.0)
        block = env.site_position(env.blocks[self.block])
        slot = goal[self.block]
        waypoints = [  # (aim, fingers, tolerance or number of steps to wait)
            (np.array([*block[:2], safe_z]), 1.0, 0.01),
            (block, 1.0, 0.008),
            (block, -1.0, -4),
            (np.array([*grip[:2], safe_z]), -1.0, 0.02),
            (np.array([*slot[:2], safe_z]), -1.0, 0.008),
            (slot + np.array([0.0, 0.0, 0.005]), -1.0, 0.008),
            (grip, 1.0, -3),
            (np.array([*slot[:2], safe_z]), 1.0, 0.02),
        ]
        aim, fingers, done_when = waypoints[self.phase]
        if done_when < 0:
            self.wait += 1
            finished = self.wait >= -done_when
        else:
            finished = np.linalg.norm(aim - grip) < done_when
        if finished:
            self.wait = 0
            self.phase += 1
            if self.phase == len(waypoints):
                self.phase, self.block = 0, self.block + 1
        return aim_action(env, aim, fingers)


Waypoint = tuple[Callable[[], np.ndarray], float, float]


class WaypointFollower:
    """Fetch controller: visits grip targets in order, each given as (target function, fingers,
    done when) where "done when" > 0 is a distance tolerance and < 0 a number of steps to wait there."""

    def __init__(self, env: FetchGoalEnv, waypoints: list[Waypoint]) -> None:
        self.env = env
        self.waypoints = waypoints
        self.index = 0
        self.wait = 0

    def __call__(self) -> np.ndarray:
        if self.index == len(self.waypoints):
            return np.zeros(4)
        target_of, fingers, done_when = self.waypoints[self.index]
        target = target_of()
        if done_when < 0:
            self.wait += 1
            finished = self.wait >= -done_when
        else:
            finished = np.linalg.norm(target - self.env.grip_position()) < done_when
        if finished:
            self.index, self.wait = self.index + 1, 0
        return aim_action(self.env, target, fingers)


def fixed_once(position_of: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    """A target computed when the follower first asks for it, then kept (e.g. "here, 8 cm higher")."""
    memo: list[np.ndarray] = []

    def target() -> np.ndarray:
        if not memo:
            memo.append(position_of())
        return memo[0]

    return target


def hook_waypoints(env: HookEnv) -> list[Waypoint]:
    """Grasp the handle's near end, bring the tip behind the block from the side, pull, move the tip out
    sideways, release the hook, then pick the block and put it on the goal."""
    grasp = lambda: env.site_position("hook_grasp")  # noqa: E731
    grip = env.grip_position
    block_x, block_y, _ = env.block_position()
    # The grasp point is 0.34 m behind the tip: with the grip here the tip is 7 cm beyond the block's centre.
    reach_x = block_x - 0.27
    # Handle lines (y): the tip (10 cm towards +y) passes beside the block, then stands behind it.
    beside, behind = block_y - 0.16, block_y - 0.075
    z = 0.425  # grip height holding the hook flat on the table
    pulled_x = 1.07  # just inside the gripper's bound (x >= 1.05 m)
    return [
        (lambda: grasp() + [0.0, 0.0, 0.08], 1.0, 0.01),
        (lambda: grasp() + [0.0, 0.0, 0.005], 1.0, 0.008),
        (grip, -1.0, -5),
        (fixed_once(lambda: np.array([grip()[0], beside, z])), -1.0, 0.01),
        (lambda: np.array([reach_x, beside, z]), -1.0, 0.01),
        (lambda: np.array([reach_x, behind, z]), -1.0, 0.01),
        (lambda: np.array([pulled_x, behind, z]), -1.0, 0.01),
        (fixed_once(lambda: grip() - [0.0, 0.13, 0.0]), -1.0, 0.01),
        (grip, 1.0, -3),
        (fixed_once(lambda: grip() + [0.0, 0.0, 0.08]), 1.0, 0.01),
        (lambda: env.block_position() + [0.0, 0.0, 0.08], 1.0, 0.01),
        (env.block_position, 1.0, 0.008),
        (grip, -1.0, -5),
        (fixed_once(lambda: grip() + [0.0, 0.0, 0.06]), -1.0, 0.01),
        (lambda: env.goal + [0.0, 0.0, 0.06], -1.0, 0.01),
        (lambda: env.goal + [0.0, 0.0, 0.003], -1.0, 0.008),
    ]


def button_waypoints(env: ButtonUnlockEnv) -> list[Waypoint]:
    """Press each button with the closed fingers (from 6 cm above, down 1 cm below the cap's rest centre),
    then go to the goal region."""
    waypoints: list[Waypoint] = []
    for index in range(env.n_buttons):
        cap = lambda index=index: env.button_position(index)  # noqa: E731
        waypoints += [
            (lambda cap=cap: cap() + [0.0, 0.0, 0.06], -1.0, 0.01),
            (fixed_once(lambda cap=cap: cap() - [0.0, 0.0, 0.01]), -1.0, -8),
            (lambda cap=cap: cap() + [0.0, 0.0, 0.06], -1.0, 0.01),
        ]
    return [*waypoints, (lambda: env.goal[:3], -1.0, 0.0)]


class TorsoDriver:
    """Pushes the ant's torso with an external horizontal force along waypoints at up to 1 m/s (the
    joints get zero torque). Proves reachability in the scene, not that the ant's own gait gets there."""

    def __init__(self, env: AntGoalEnv, waypoints: list[np.ndarray]) -> None:
        self.env = env
        self.waypoints = waypoints
        self.torso = env.model.body("torso").id
        self.mass = env.model.body_subtreemass[self.torso]

    def __call__(self) -> np.ndarray:
        xy = self.env.torso_xy()
        if len(self.waypoints) > 1 and np.linalg.norm(self.waypoints[0] - xy) < 0.3:
            self.waypoints.pop(0)
        offset = self.waypoints[0] - xy
        distance = np.linalg.norm(offset)
        velocity = offset / max(distance, 1e-9) * min(1.0, 2.0 * distance)
        self.env.data.xfrc_applied[self.torso, :2] = (velocity - self.env.data.qvel[:2]) * self.mass * 20.0
        return np.zeros(8)


# Open-loop torque gait of the ant (gear 16, 0.1 s per env step) that walks it towards +x at about 0.35 m/s: per
# actuator (ant.xml order: hip_4, ankle_4, hip_1, ankle_1, hip_2, ankle_2, hip_3, ankle_3)
# offset + amplitude * sin(omega * step + phase). Found by experiment/benchmarks/ant_gait_search.py with its defaults
# (cross-entropy search over these 25 numbers for +x distance in 10 s from two start states).
GAIT_OMEGA = 0.506
GAIT_AMPLITUDE = np.array([0.35, 0.918, 0.649, 0.188, 0.257, 0.572, 0.978, 0.55])
GAIT_PHASE = np.array([0.618, -2.309, 0.258, -0.75, -1.918, 1.636, -2.961, -0.762])
GAIT_OFFSET = np.array([0.513, 0.277, 0.058, 0.826, -0.374, 0.323, -0.173, 0.289])
# Sign that makes each leg's ankle angle mean the same bend (legs 4, 1 bend with +, legs 2, 3 with -): turning
# the ant by 90 degrees counter-clockwise maps leg 4 -> 1 -> 2 -> 3 -> 4 with the ankle torque times the sign ratio.
ANKLE_SIGN = np.array([1.0, 1.0, -1.0, -1.0])


def rotated_gait(quarter_turns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(amplitude, phase, offset) per actuator of the +x gait turned by ``quarter_turns`` * 90 degrees
    counter-clockwise: each leg's pattern moves on to the next leg, ankle torques times the sign ratio."""
    amplitude, phase, offset = (values.reshape(4, 2) for values in (GAIT_AMPLITUDE, GAIT_PHASE, GAIT_OFFSET))
    flip = np.stack([np.ones(4), ANKLE_SIGN * np.roll(ANKLE_SIGN, 1)], axis=1)
    for _ in range(quarter_turns % 4):
        amplitude, offset = np.roll(amplitude, 1, axis=0) * flip, np.roll(offset, 1, axis=0) * flip
        phase = np.roll(phase, 1, axis=0)
    return amplitude.ravel(), phase.ravel(), offset.ravel()


def torso_yaw(quaternion: np.ndarray) -> float:
    """Heading (rotation about z) of a (w, x, y, z) quaternion."""
    w, x, y, z = quaternion
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


class AntGaitWalker:
    """Walks the ant with its own motors along waypoints: of the four turned copies of the open-loop gait above it
    uses the one whose walking direction (in the torso's frame) is closest to the next waypoint, and keeps it until
    the waypoint is ``SWITCH_MARGIN`` beyond half-way to another one (frequent switching made the ant fall more)."""

    SWITCH_MARGIN = 0.3  # radians

    def __init__(self, env: AntGoalEnv, waypoints: list[np.ndarray]) -> None:
        self.env = env
        self.waypoints = waypoints
        self.step = 0
        self.gaits = [rotated_gait(turns) for turns in range(4)]
        self.turns: int | None = None

    def __call__(self) -> np.ndarray:
        xy = self.env.torso_xy()
        if len(self.waypoints) > 1 and np.linalg.norm(self.waypoints[0] - xy) < 0.5:
            self.waypoints.pop(0)
        offset = self.waypoints[0] - xy
        bearing = np.arctan2(offset[1], offset[0]) - torso_yaw(self.env.data.qpos[3:7])
        off_course = None if self.turns is None else abs(np.angle(np.exp(1j * (bearing - self.turns * np.pi / 2))))
        if off_course is None or off_course > np.pi / 4 + self.SWITCH_MARGIN:
            self.turns = int(np.round(bearing / (np.pi / 2))) % 4
        amplitude, phase, torque_offset = self.gaits[self.turns]
        action = np.clip(torque_offset + amplitude * np.sin(GAIT_OMEGA * self.step + phase), -1.0, 1.0)
        self.step += 1
        return action


def four_rooms_path(start: np.ndarray, goal: np.ndarray) -> list[np.ndarray]:
    """Waypoints from the start to the goal through doorways: neighbouring rooms share one, the diagonal
    room is reached through a neighbour's centre."""
    start_room, goal_room = int(room_of(start)), int(room_of(goal))
    if (ROOMS[start_room] == ROOMS[goal_room]).any():
        return [doorway(start_room, goal_room), goal]
    via = next(room for room in range(len(ROOMS)) if (ROOMS[room] == ROOMS[start_room]).sum() == 1)
    return [doorway(start_room, via), ROOMS[via] * ROOM_SIZE / 2, doorway(via, goal_room), goal]


# Each env class's solver, built from the env just after its reset; the first class that matches is used, so a
# subclass (Ant4RoomsEnv) comes before its base (AntGoalEnv).
SOLVERS: dict[type, Callable[[Any], Callable[[], np.ndarray]]] = {
    BlocksEnv: ScriptedStacker,
    HookEnv: lambda env: WaypointFollower(env, hook_waypoints(env)),
    ButtonUnlockEnv: lambda env: WaypointFollower(env, button_waypoints(env)),
    Ant4RoomsEnv: lambda env: AntGaitWalker(env, four_rooms_path(env.torso_xy(), env.goal)),
    AntGoalEnv: lambda env: AntGaitWalker(env, [env.goal]),
}


def _solver_of(env: gym.Env) -> Callable[[Any], Callable[[], np.ndarray]] | None:
    return next((solver for kind, solver in SOLVERS.items() if isinstance(env.unwrapped, kind)), None)


def has_scripted_solver(env: gym.Env) -> bool:
    """Whether :func:`scripted_controller` can drive `env`."""
    return _solver_of(env) is not None


def scripted_controller(env: gym.Env) -> Callable[[], np.ndarray]:
    """The scripted solver for an env that was just reset: a callable giving the next action."""
    solver = _solver_of(env)
    if solver is None:
        raise ValueError(f"no scripted solver for {type(env.unwrapped).__name__}")
    return solver(env.unwrapped)


def scripted_success(
    env_id: str, seed: int, controller_of: Callable[[gym.Env], Callable[[], np.ndarray]] = scripted_controller
) -> bool:
    """Whether a controller (by default the env's scripted solver) reaches success within the episode limit."""
    env = gym.make(env_id)
    env.reset(seed=seed)
    controller = controller_of(env)
    done = success = False
    while not (done or success):
        _, _, terminated, truncated, info = env.step(controller())
        done, success = terminated or truncated, bool(info["is_success"])
    env.close()
    return success
