"""The Fetch arm of gymnasium-robotics as a base for our tabletop goal envs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mujoco
import numpy as np
from gymnasium_robotics.utils import rotations

from ideas_envs.mujoco_goal_env import MujocoGoalEnv

# The robot base's slide joints put the arm in front of the table (as in gymnasium-robotics' Fetch scenes).
FETCH_BASE_QPOS = {"robot0:slide0": 0.405, "robot0:slide1": 0.48, "robot0:slide2": 0.0}
# Gripper pointing down, expressed as the (unnormalised) quaternion the mocap weld is driven with.
GRIPPER_DOWN_QUAT = np.array([1.0, 0.0, 1.0, 0.0])
FETCH_CAMERA = {"distance": 1.6, "azimuth": 160.0, "elevation": -35.0, "lookat": np.array([1.3, 0.75, 0.45])}
# Moves the grip site from the robot's default arm pose to the front of the table, before the extra height.
GRIPPER_START_OFFSET = np.array([-0.498, 0.005, -0.431])
TABLE_TOP_Z = 0.4  # top surface of the table in our Fetch scenes (box at z=0.2 with half height 0.2)
# The finger joints; the scene names each finger's position actuator like its joint.
FINGER_JOINTS = ("robot0:r_gripper_finger_joint", "robot0:l_gripper_finger_joint")


class FetchGoalEnv(MujocoGoalEnv):
    """Fetch arm with a parallel gripper in a scene XML that includes gymnasium-robotics' ``fetch/robot.xml``.

    - Action space: ``Box(-1, 1, (4,), float32)``: gripper displacement (x, y, z), scaled to at most 5 cm per
      step and applied through the robot's mocap weld (orientation fixed, pointing down), and the finger
      command added to the finger positions (negative closes, positive opens; ignored when ``block_gripper``).
    - Gripper observation (``_gripper_observation``): grip site position (3), finger joint positions (2),
      grip site velocity (3) and finger velocities (2), velocities as displacement per step.
    - Time: 20 MuJoCo substeps of 2 ms per step (25 steps per second of simulated time).
    - Start: the arm moves its grip site to ``gripper_extra_height`` above the default Fetch pose; the
      reached position is ``initial_gripper_xpos``.

    Subclasses add objects, goals and observations. The scene XML must include gymnasium-robotics'
    ``fetch/shared.xml`` and ``fetch/robot.xml``, keep MuJoCo's default 2 ms timestep and define one position
    actuator per finger, named like the finger joint (see ``ideas_envs/blocks/blocks.xml``).

    :param scene_xml: Absolute path of the scene XML.
    :param goal_markers: Marker mocap body per goal part.
    :param gripper_extra_height: Start height of the grip site above the default pose.
    :param block_gripper: Keep the fingers closed and ignore the finger command.
    :param initial_qpos: Joint positions set once at setup, added to the robot base's.
    :param gripper_bounds: (low, high) world box the arm's mocap target is clipped to, which keeps the grip
        site within about a centimetre of it (e.g. to keep objects out of reach); ``None``: unbounded.
    :param kwargs: Passed to ``MujocoGoalEnv``.
    """

    def __init__(
        self,
        scene_xml: str | Path,
        goal_markers: list[str],
        gripper_extra_height: float = 0.2,
        block_gripper: bool = False,
        initial_qpos: dict[str, Any] | None = None,
        gripper_bounds: tuple[np.ndarray, np.ndarray] | None = None,
        **kwargs: Any,
    ) -> None:
        self.gripper_extra_height = gripper_extra_height
        self.gripper_bounds = gripper_bounds
        self.block_gripper = block_gripper
        kwargs.setdefault("default_camera_config", FETCH_CAMERA)
        super().__init__(
            scene_xml=scene_xml,
            goal_markers=goal_markers,
            initial_qpos={**FETCH_BASE_QPOS, **(initial_qpos or {})},
            n_actions=4,
            n_substeps=20,
            **kwargs,
        )

    def _set_action(self, action: np.ndarray) -> None:
        # Other mocap bodies (goal markers) exist, so the arm's mocap is addressed by its id.
        self._utils.reset_mocap2body_xpos(self.model, self.data)
        self.data.mocap_pos[self._arm_mocap] += np.asarray(action[:3]) * 0.05
        if self.gripper_bounds is not None:
            self.data.mocap_pos[self._arm_mocap] = np.clip(self.data.mocap_pos[self._arm_mocap], *self.gripper_bounds)
        self.data.mocap_quat[self._arm_mocap] = GRIPPER_DOWN_QUAT
        finger = 0.0 if self.block_gripper else float(action[3])
        for actuator, qpos_address in self._finger_actuators:
            self.data.ctrl[actuator] = self.data.qpos[qpos_address] + finger

    def _step_callback(self) -> None:
        if self.block_gripper:
            for joint in FINGER_JOINTS:
                self._utils.set_joint_qpos(self.model, self.data, joint, 0.0)
            mujoco.mj_forward(self.model, self.data)

    def _env_setup(self, initial_qpos: dict[str, Any]) -> None:
        self._arm_mocap = int(self.model.body_mocapid[self._model_names.body_name2id["robot0:mocap"]])
        self._finger_actuators = []
        for finger in FINGER_JOINTS:
            actuator = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_ACTUATOR, finger)
            qpos_address = int(self.model.jnt_qposadr[self.model.actuator_trnid[actuator, 0]])
            self._finger_actuators.append((actuator, qpos_address))
        for name, value in initial_qpos.items():
            self._utils.set_joint_qpos(self.model, self.data, name, value)
        self._utils.reset_mocap_welds(self.model, self.data)
        mujoco.mj_forward(self.model, self.data)
        grip = self.grip_position()
        start = grip + GRIPPER_START_OFFSET + np.array([0.0, 0.0, self.gripper_extra_height])
        self.data.mocap_pos[self._arm_mocap] = start
        self.data.mocap_quat[self._arm_mocap] = GRIPPER_DOWN_QUAT
        for _ in range(10):
            mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        self.initial_gripper_xpos = self.grip_position()

    def _gripper_observation(self) -> np.ndarray:
        """Grip position, finger positions, grip velocity and finger velocities (10 values)."""
        grip_pos = self.grip_position()
        grip_velp = self._utils.get_site_xvelp(self.model, self.data, "robot0:grip") * self.dt
        finger_pos = [self._utils.get_joint_qpos(self.model, self.data, j)[0] for j in FINGER_JOINTS]
        finger_vel = [self._utils.get_joint_qvel(self.model, self.data, j)[0] * self.dt for j in FINGER_JOINTS]
        return np.concatenate([grip_pos, finger_pos, grip_velp, finger_vel])

    def _object_observation(self, site: str, grip_pos: np.ndarray, grip_velp: np.ndarray) -> np.ndarray:
        """A free object's features (15 values) from its site: position, position relative to the grip,
        orientation as Euler angles, velocity relative to the grip, angular velocity (velocities per step)."""
        pos = self.site_position(site)
        rot = rotations.mat2euler(self._utils.get_site_xmat(self.model, self.data, site))
        velp = self._utils.get_site_xvelp(self.model, self.data, site) * self.dt
        velr = self._utils.get_site_xvelr(self.model, self.data, site) * self.dt
        return np.concatenate([pos, pos - grip_pos, rot, velp - grip_velp, velr])

    def grip_position(self) -> np.ndarray:
        """World position of the grip site (between the fingers)."""
        return self.site_position("robot0:grip")
