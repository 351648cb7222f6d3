"""Base class for our MuJoCo goal envs: scene loading from package assets, goal parts, markers, rendering."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
from gymnasium_robotics.envs.robot_env import MujocoRobotEnv

# Scene XMLs name files of installed packages as "<package>:<path inside its assets folder>"; the loader turns
# them into absolute paths, so robots and meshes are used from the installed package and never copied.
ASSET_ROOTS = {
    "gymnasium_robotics": files("gymnasium_robotics") / "envs" / "assets",
    "gymnasium": files("gymnasium") / "envs" / "mujoco" / "assets",
}
PATH_ATTRIBUTES = ("file", "meshdir", "texturedir")


def resolve_asset_path(value: str) -> str:
    """Turn ``"gymnasium_robotics:fetch/robot.xml"`` into an absolute path; other values stay as they are."""
    package, sep, relative = value.partition(":")
    if not sep or package not in ASSET_ROOTS:
        return value
    path = Path(str(ASSET_ROOTS[package] / relative))
    if not path.exists():
        raise FileNotFoundError(f"{value!r} resolves to {path}, which does not exist")
    return str(path)


def load_scene(scene_xml: str | Path) -> ET.Element:
    """Parse a scene XML and resolve package-relative asset paths (see ``ASSET_ROOTS``) to absolute ones."""
    root = ET.parse(scene_xml).getroot()
    for element in root.iter():
        for attribute in PATH_ATTRIBUTES:
            if attribute in element.attrib:
                element.set(attribute, resolve_asset_path(element.get(attribute, "")))
    return root


def remove_named(root: ET.Element, names: set[str]) -> None:
    """Drop every body and site of a parsed scene whose name is in ``names`` (with all it contains)."""
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag in ("body", "site") and child.get("name") in names:
                parent.remove(child)


def use_offscreen_gl() -> None:
    """Pick an offscreen OpenGL backend if the user chose none: EGL with a GPU, OSMesa (software) without.

    Only used when no display is available; ``MUJOCO_GL`` set by the user always wins.
    """
    if "MUJOCO_GL" in os.environ or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    has_gpu = Path("/dev/nvidia0").exists() or Path("/dev/dri/renderD128").exists()
    os.environ["MUJOCO_GL"] = "egl" if has_gpu else "osmesa"


def goal_part_distances(achieved_goal: np.ndarray, desired_goal: np.ndarray, part_dim: int) -> np.ndarray:
    """Euclidean distance per goal part; goals of shape (..., n_parts * part_dim) give (..., n_parts)."""
    difference = np.asarray(achieved_goal, dtype=np.float64) - np.asarray(desired_goal, dtype=np.float64)
    parts = difference.reshape(*difference.shape[:-1], -1, part_dim)
    return np.linalg.norm(parts, axis=-1)


class MujocoGoalEnv(MujocoRobotEnv):
    """A goal env on the official ``mujoco`` bindings whose goal is a list of positions ("goal parts").

    Start here for a new MuJoCo goal env. The base class (gymnasium-robotics' ``MujocoRobotEnv``) provides
    the Dict observation space (``observation``, ``achieved_goal``, ``desired_goal``), ``step`` and a seeded
    ``reset``; this class adds:

    - loading a scene XML shipped in our package whose asset paths may point into installed packages
      (``"gymnasium_robotics:fetch/robot.xml"``, see ``load_scene``), with a ``_edit_scene`` hook that may
      change the parsed XML before it is compiled (e.g. drop unused objects);
    - goals made of ``part_dim``-sized parts (e.g. one 3-D position per block); a part is reached when it is
      within ``distance_threshold`` of its target, the goal when every part is reached (``part_distances``
      may be overridden for goals that hold more than positions);
    - a vectorised ``compute_reward``: ``"sparse"`` gives 0 when the goal is reached and -1 otherwise,
      ``"dense"`` the negative sum of part distances; it accepts single goals and batches (HER relabelling);
    - ``info["is_success"]`` (bool) from ``reset`` and ``step``;
    - goal markers: the mocap body named ``goal_markers[i]`` (holding a visible site, e.g. a translucent sphere)
      is moved to goal part ``i`` (the first ``len(goal_markers)`` parts) before each rendered frame (mocap,
      because MuJoCo does not recompute static bodies; for 2-D goal parts the marker keeps its z);
    - ``render_mode="rgb_array"`` offscreen, choosing ``MUJOCO_GL`` (EGL or OSMesa) when unset and headless.

    Subclasses implement ``_get_obs``, ``_set_action``, ``_sample_goal`` and usually ``_env_setup`` and
    ``_reset_sim`` (call ``super()._reset_sim()`` first; it restores the state recorded after ``_env_setup``).

    :param scene_xml: Absolute path of the scene XML.
    :param goal_markers: One marker mocap body name per goal part, in goal order.
    :param part_dim: Size of one goal part (3 for positions, 2 for planar positions).
    :param distance_threshold: Largest distance at which a goal part counts as reached.
    :param reward_type: ``"sparse"`` or ``"dense"``.
    :param kwargs: Passed to ``MujocoRobotEnv`` (``initial_qpos``, ``n_actions``, ``n_substeps``,
        ``render_mode``, ``width``, ``height``, ``default_camera_config``).
    """

    def __init__(
        self,
        scene_xml: str | Path,
        goal_markers: Sequence[str],
        part_dim: int = 3,
        distance_threshold: float = 0.05,
        reward_type: str = "sparse",
        **kwargs: Any,
    ) -> None:
        if reward_type not in ("sparse", "dense"):
            raise ValueError(f"reward_type must be 'sparse' or 'dense', got {reward_type!r}")
        if kwargs.get("render_mode") in ("rgb_array", "depth_array"):
            use_offscreen_gl()
        self.goal_markers = tuple(goal_markers)
        self.part_dim = part_dim
        self.distance_threshold = distance_threshold
        self.reward_type = reward_type
        super().__init__(model_path=str(scene_xml), **kwargs)

    def _edit_scene(self, root: ET.Element) -> None:
        """Change the parsed scene before it is compiled; the default keeps it as it is."""

    def _initialize_simulation(self) -> None:
        root = load_scene(self.fullpath)
        self._edit_scene(root)
        self.model = mujoco.MjModel.from_xml_string(ET.tostring(root, encoding="unicode"))
        self.data = mujoco.MjData(self.model)
        self._model_names = self._utils.MujocoModelNames(self.model)
        self.model.vis.global_.offwidth = self.width
        self.model.vis.global_.offheight = self.height
        self._marker_mocap_ids = [self._marker_mocap_id(name) for name in self.goal_markers]
        self._env_setup(initial_qpos=self.initial_qpos)
        self.initial_time = self.data.time
        self.initial_qpos = np.copy(self.data.qpos)
        self.initial_qvel = np.copy(self.data.qvel)

    def _marker_mocap_id(self, body_name: str) -> int:
        mocap_id = int(self.model.body_mocapid[self._model_names.body_name2id[body_name]])
        if mocap_id < 0:
            raise ValueError(f'goal marker body {body_name!r} must be a mocap body (mocap="true")')
        return mocap_id

    def site_position(self, name: str) -> np.ndarray:
        """World position of the named site (a copy), e.g. an object's centre for observations and solvers."""
        return self.data.site(name).xpos.copy()

    def part_distances(self, achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
        """Distance per goal part (last axis), for single goals and batches; envs whose goals hold more than
        positions override it (e.g. a flag part whose distance is 0 when it matches)."""
        return goal_part_distances(achieved_goal, desired_goal, self.part_dim)

    def goal_parts_reached(self, achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
        """Boolean per goal part (last axis), for single goals and batches."""
        return self.part_distances(achieved_goal, desired_goal) < self.distance_threshold

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        """Sparse: 0 if every goal part is reached, else -1. Dense: minus the sum of part distances."""
        if self.reward_type == "dense":
            return -self.part_distances(achieved_goal, desired_goal).sum(axis=-1)
        reached = self.goal_parts_reached(achieved_goal, desired_goal).all(axis=-1)
        return reached.astype(np.float64) - 1.0

    def _is_success(self, achieved_goal: np.ndarray, desired_goal: np.ndarray) -> bool:
        return bool(self.goal_parts_reached(achieved_goal, desired_goal).all())

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset to a seeded random start state and goal; ``info`` holds ``is_success``."""
        observation, info = super().reset(seed=seed, options=options)
        info["is_success"] = self._is_success(observation["achieved_goal"], self.goal)
        return observation, info

    def _render_callback(self) -> None:
        # Markers show the leading position parts; a goal may hold further values (e.g. flags) after them.
        parts = self.goal[: len(self._marker_mocap_ids) * self.part_dim].reshape(-1, self.part_dim)
        for mocap_id, part in zip(self._marker_mocap_ids, parts, strict=True):
            self.data.mocap_pos[mocap_id][: self.part_dim] = part
        mujoco.mj_forward(self.model, self.data)
