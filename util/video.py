"""Test-episode videos: offscreen MP4 files (with a small GIF preview) or a live window, every `render_freq` epochs.

`render_test=record` renders offscreen (MuJoCo on EGL where an NVIDIA GPU is present, OSMesa otherwise) and
writes `<run_dir>/videos/test_step_<env steps>.mp4` and `.gif`; `render_test=display` shows the episode in a
window and needs a display.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from util.errors import ConfigError
from util.model_protocol import EpisodicModel

log = logging.getLogger(__name__)

# render_test value -> gymnasium render_mode of the env that plays the recorded episodes.
GYM_RENDER_MODES = {"record": "rgb_array", "display": "human"}
# Frame size asked of envs that accept `width`/`height` (all MuJoCo envs). OSMesa renders about 12.7 frames/s
# at 480x480 on a 2-core machine; 240x240 is about four times cheaper and still shows the scene.
FRAME_SIZE = {"width": 240, "height": 240}
GIF_WIDTH = 120
GIF_FRAME_STEP = 2
DEFAULT_FPS = 25
# Subgoal markers of hierarchical learners, by the layer that pursues them (0 = lowest): orange, yellow, cyan
# (Fetch draws its own goal red).
SUBGOAL_RGBA = ((1.0, 0.5, 0.0, 0.8), (0.95, 0.9, 0.1, 0.8), (0.1, 0.9, 0.9, 0.8))
SUBGOAL_SIZE = 0.025


def display_available() -> bool:
    """True where a window can open: macOS and Windows always, elsewhere when DISPLAY or WAYLAND_DISPLAY is set."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def check_render_test(render_test: str) -> None:
    """Raise ConfigError (key `render_test`) when the requested mode cannot work on this machine."""
    if render_test == "display" and not display_available():
        raise ConfigError(
            "render_test",
            "display needs a screen, but this machine has none (DISPLAY and WAYLAND_DISPLAY are unset); "
            "use render_test=record to write videos instead",
        )
    if render_test == "record" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise ConfigError(
            "render_test",
            "record writes MP4 files with the pip package imageio-ffmpeg, which is not installed "
            "(pip install imageio-ffmpeg)",
        )


def _nvidia_gpu_present() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=False).returncode == 0


def select_gl_backend(render_test: str) -> None:
    """Choose MuJoCo's OpenGL backend before its first render, as `set_paths.sh` would.

    For `record`, an unset MUJOCO_GL becomes `egl` with an NVIDIA GPU and `osmesa` (plus PYOPENGL_PLATFORM)
    otherwise; a value the user set is kept. For `display`, an offscreen-only backend is replaced by `glfw`,
    which opens windows.
    """
    if render_test == "record" and not os.environ.get("MUJOCO_GL"):
        backend = "egl" if _nvidia_gpu_present() else "osmesa"
        os.environ["MUJOCO_GL"] = backend
        if backend == "osmesa":
            os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
        log.info("rendering offscreen with MUJOCO_GL=%s", backend)
    elif render_test == "display" and os.environ.get("MUJOCO_GL", "").lower() in ("egl", "osmesa"):
        log.info("render_test=display: MUJOCO_GL=%s renders offscreen only, switching to glfw", os.environ["MUJOCO_GL"])
        os.environ["MUJOCO_GL"] = "glfw"
        if os.environ.get("PYOPENGL_PLATFORM", "").lower() in ("egl", "osmesa"):
            del os.environ["PYOPENGL_PLATFORM"]


def write_mp4(frames: list[np.ndarray], path: Path, fps: int) -> None:
    """Write RGB frames as an H.264 MP4 (cropped to even width and height, which the codec needs)."""
    import imageio.v2 as imageio  # imports imageio-ffmpeg's writer only when a video is written

    height, width = (dim - dim % 2 for dim in frames[0].shape[:2])
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=2) as writer:
        for frame in frames:
            writer.append_data(frame[:height, :width])


def write_gif_preview(frames: list[np.ndarray], path: Path, fps: int) -> None:
    """Write every GIF_FRAME_STEP-th frame, scaled to GIF_WIDTH pixels wide, as a looping GIF."""
    height = max(1, round(frames[0].shape[0] * GIF_WIDTH / frames[0].shape[1]))
    images = [
        Image.fromarray(frame).resize((GIF_WIDTH, height), Image.Resampling.BILINEAR)
        for frame in frames[::GIF_FRAME_STEP]
    ]
    duration_ms = round(1000 * GIF_FRAME_STEP / fps)
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


class TestEpisodeRecorder:
    """Plays one deterministic test episode every `render_freq` epochs (and after the last) on its own env.

    In `record` mode the frames go to `<video_dir>/test_step_<env steps>.mp4` plus a GIF preview; in `display`
    mode the env draws its window itself. The env is separate from the one that produces the test metrics, so
    recording never changes them.

    :param env: A single env built with the render_mode of `GYM_RENDER_MODES[render_test]`; the recorder
        closes it.
    :param render_test: `record` or `display`.
    :param render_freq: Epochs between recordings.
    :param seed: Seed of the first recorded episode's reset; later episodes count up from it.
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, env: gym.Env, render_test: str, render_freq: int, seed: int) -> None:
        render_mode = GYM_RENDER_MODES[render_test]
        if render_mode not in env.metadata.get("render_modes", []) or env.render_mode != render_mode:
            name = env.spec.id if env.spec else type(env.unwrapped).__name__
            raise ConfigError("render_test", f"{name} cannot render in mode '{render_mode}'", ["none"])
        self.env = env
        self.render_test = render_test
        self.render_freq = render_freq
        self.fps = int(env.metadata.get("render_fps") or DEFAULT_FPS)
        self.next_seed = seed

    def due(self, epoch: int, last_epoch: bool) -> bool:
        """Whether epoch `epoch` (1-based) gets a recording."""
        return last_epoch or epoch % self.render_freq == 0

    def record(self, model: BaseAlgorithm, train_env: VecEnv, env_steps: int, video_dir: Path) -> list[Path]:
        """Play one episode with the model's deterministic policy; return the files written to `video_dir`.

        Nothing is written in display mode.

        Observations are normalised with `train_env`'s statistics when it is a VecNormalize.
        """
        normalize = train_env.normalize_obs if isinstance(train_env, VecNormalize) else None
        capture = self.render_test == "record"
        observation, _ = self.env.reset(seed=self.next_seed)
        self.next_seed += 1
        frames = [np.asarray(self.env.render())] if capture else []
        done, episode_start = False, np.ones(1, dtype=bool)
        while not done:
            policy_input: Any = normalize(observation) if normalize is not None else observation
            # Acts as a batch of one env, as in training and testing, and steps the env with that env's action.
            action, _ = model.predict(_batch_of_one(policy_input), episode_start=episode_start, deterministic=True)
            episode_start = np.zeros(1, dtype=bool)
            self.mark_subgoals(model)
            observation, _, terminated, truncated, _ = self.env.step(action[0])
            if capture:  # in display mode the env draws its window itself during step
                frames.append(np.asarray(self.env.render()))
            done = bool(terminated or truncated)
        if not capture:
            return []
        video_dir.mkdir(parents=True, exist_ok=True)
        mp4 = video_dir / f"test_step_{env_steps:08d}.mp4"
        gif = mp4.with_suffix(".gif")
        write_mp4(frames, mp4, self.fps)
        write_gif_preview(frames, gif, self.fps)
        log.info("recorded a test episode of %d frames to %s", len(frames), mp4)
        return [mp4, gif]

    def mark_subgoals(self, model: Any) -> None:
        """Queue markers for the subgoals a hierarchical learner (HAC) is pursuing, for the next frame drawn.

        Uses the learner's `current_subgoals()` (lowest layer first; the last is the env's own goal, which the
        env draws itself) and gymnasium's MuJoCo renderer markers, which are dropped after each frame. Goals are
        drawn when they are 3-D positions (or several of them, as in Blocks); others are skipped.
        """
        renderer = getattr(self.env.unwrapped, "mujoco_renderer", None)
        if not isinstance(model, EpisodicModel) or renderer is None:
            return
        viewer = renderer._get_viewer(self.env.render_mode)
        for layer, goal in enumerate(model.current_subgoals()[:-1]):
            if goal.size % 3:
                continue
            for position in np.reshape(goal, (-1, 3)):
                viewer.add_marker(
                    pos=position,
                    size=np.full(3, SUBGOAL_SIZE),
                    rgba=np.array(SUBGOAL_RGBA[layer % len(SUBGOAL_RGBA)]),
                    type=2,  # mujoco.mjtGeom.mjGEOM_SPHERE
                    label="",
                )

    def close(self) -> None:
        """Close the env and free its window or offscreen context now.

        Gymnasium's MuJoCo renderer keeps its closed viewers; their OSMesa contexts would otherwise be freed a
        second time at interpreter exit, after mujoco's modules are gone ("Exception ignored ... OSMesa").
        """
        self.env.close()
        renderer = getattr(self.env.unwrapped, "mujoco_renderer", None)
        if renderer is not None:
            renderer._viewers.clear()
            renderer.viewer = None


def _batch_of_one(observation: Any) -> Any:
    """One env's observation (a dict of arrays or an array) as a batch of one, the shape a VecEnv returns."""
    if isinstance(observation, dict):
        return {key: np.asarray(value)[None] for key, value in observation.items()}
    return np.asarray(observation)[None]
