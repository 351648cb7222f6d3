"""Env factory: turns an `env` config value into seeded, monitored (vectorised) envs and checks them."""

from __future__ import annotations

import copy
import difflib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

import ideas_envs.register_envs  # noqa: F401  (registers our ids)
from ideas_envs.goal_reward_convention import MinusOneZeroReward, pays_one_at_goal
from ideas_envs.grasped_start import GraspedStart, can_start_grasped
from ideas_envs.scripted_solvers import has_scripted_solver
from ideas_envs.scripted_start import ScriptedStart
from util.errors import ConfigError
from util.subproc_vec_env import GoalSubprocVecEnv, TrainWhileStepping

# The gymnasium-robotics ids (Fetch, mazes) are registered by importing ideas_envs, which imports it quietly.

GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")
# Training-start aids by config key: whether an env can have it, its wrapper, and the refusal for one that cannot.
START_AIDS: dict[str, tuple[Callable[[gym.Env], bool], Callable[[gym.Env, float], gym.Env], str]] = {
    "grasped_start_prob": (
        can_start_grasped,
        GraspedStart,
        "has no object to hold or no gripper that opens; FetchPickAndPlace-v4 and Hook-o1-v1 can start grasped",
    ),
    "scripted_start_prob": (
        has_scripted_solver,
        ScriptedStart,
        "has no scripted solver; our Blocks, Hook, ButtonUnlock, AntReacher and Ant4Rooms envs have one",
    ),
}
# Goal pairs in the batch `check_goal_env` asks `compute_reward` about.
REWARD_PROBE_BATCH = 4


def resolve_env_id(env_id: str) -> str:
    """Return the registered gymnasium id for `env`, importing `module:` prefixes; ConfigError otherwise.

    Accepts any registered id (gymnasium, gymnasium-robotics, ideas_envs) and ``module:EnvId`` for a user's
    module that registers ``EnvId`` on import.
    """
    if not isinstance(env_id, str) or not env_id:
        raise ConfigError("env", f"must be a gymnasium env id, got {env_id!r}")
    name = env_id
    if ":" in env_id:
        module, name = env_id.split(":", 1)
        _make_working_directory_importable()
        try:
            importlib.import_module(module)
        except Exception as error:  # any import-time failure of user code is bad input
            raise ConfigError("env", f"module '{module}' of env={env_id} failed to import: {error!r}") from None
    if name in gym.registry:
        if "MujocoPy" in str(gym.registry[name].entry_point) and importlib.util.find_spec("mujoco_py") is None:
            family = name.rsplit("-v", 1)[0] + "-v"
            newer = [
                i for i in gym.registry if i.startswith(family) and "MujocoPy" not in str(gym.registry[i].entry_point)
            ]
            raise ConfigError(
                "env", f"'{name}' needs mujoco-py, which no longer installs; use the official-MuJoCo version", newer
            )
        return name
    close = difflib.get_close_matches(name, list(gym.registry), n=5, cutoff=0.5)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError("env", f"unknown env id '{name}'{hint}")


def _make_working_directory_importable() -> None:
    """Let `env=my_envs:Id` find `my_envs.py` in the folder training runs from, as `python -m` would.

    `python experiment/train.py` puts experiment/ on sys.path, not the working directory. It is appended, so a
    file there never shadows an installed package; sweep trials start in the same folder and pass here too.
    """
    cwd = os.getcwd()
    if not any(os.path.abspath(entry or os.curdir) == cwd for entry in sys.path):
        sys.path.append(cwd)


def make_env(
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    render_mode: str | None = None,
    start_probs: Mapping[str, float] | None = None,
) -> gym.Env:
    """Build one env by id and wrap it in SB3's Monitor, which records episode returns and lengths.

    Goal envs that pay +1 at the goal (gymnasium-robotics' sparse mazes) are first mapped to the -1/0 reward and
    `info["is_success"]` every other goal env here has (:class:`MinusOneZeroReward`). `start_probs` maps keys of
    START_AIDS to the share of episodes that start with that aid (training envs): `grasped_start_prob` with the
    object in the gripper (:class:`GraspedStart`), `scripted_start_prob` part of the way along the scripted
    solver's path (:class:`ScriptedStart`).
    """
    kwargs = dict(env_kwargs or {})
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        env = gym.make(env_id, **kwargs)
    except TypeError as error:
        raise ConfigError("env_kwargs", f"rejected by {env_id}: {error}") from None
    for key, prob in (start_probs or {}).items():
        if prob > 0:
            applies, wrapper, refusal = START_AIDS[key]
            if not applies(env):
                env.close()
                raise ConfigError(key, f"{env_id} {refusal} (use 0 elsewhere)")
            env = wrapper(env, prob)
    return Monitor(MinusOneZeroReward(env) if pays_one_at_goal(env) else env)


def make_vec_env(
    env_id: str,
    env_kwargs: dict[str, Any] | None,
    seed: int,
    n_envs: int = 1,
    normalize_obs: bool = False,
    render_mode: str | None = None,
    subprocess: bool = False,
    obs_std_floor: float = 0.0,
    shared_goal_statistics: bool = False,
    start_probs: Mapping[str, float] | None = None,
) -> VecEnv:
    """Build `n_envs` seeded copies of an env in a DummyVecEnv, optionally with observation normalisation.

    Goal envs are normalised on `observation` and both goals, never on rewards, so that rewards recomputed by
    HER stay on the env's own scale. Relabelling feeds achieved goals into the `desired_goal` input, so a goal
    component that never varies in the env's own goals (a block's height on a table, a button that must end
    pressed) would map the achieved values to the clip bound: inputs the policy never meets at test time.
    Two guards: with `shared_goal_statistics` both goal keys share one running mean/std, fed by desired and
    achieved goals alike; and every component is divided by sqrt(variance + `obs_std_floor`**2).
    With `subprocess` the envs step in a worker process instead, under a :class:`TrainWhileStepping` wrapper
    that lets a learner train while they step. `start_probs`: see :func:`make_env`.
    """
    factories: list[Callable[[], gym.Env]] = [
        (lambda: make_env(env_id, env_kwargs, render_mode, start_probs)) for _ in range(n_envs)
    ]
    vec_env: VecEnv = TrainWhileStepping(GoalSubprocVecEnv(factories)) if subprocess else DummyVecEnv(factories)
    vec_env.seed(seed)
    vec_env.action_space.seed(seed)
    if normalize_obs:
        space = vec_env.observation_space
        keys = list(space.spaces) if isinstance(space, gym.spaces.Dict) else None
        epsilon = max(obs_std_floor**2, 1e-8)  # SB3's default epsilon when there is no floor
        vec_env = VecNormalize(vec_env, norm_obs=True, norm_reward=False, norm_obs_keys=keys, epsilon=epsilon)
        if shared_goal_statistics and _goal_shapes_match(space):
            # One object under both keys: every update of either key feeds it (pickling keeps the sharing).
            vec_env.obs_rms["desired_goal"] = vec_env.obs_rms["achieved_goal"]  # type: ignore[index]
    return vec_env


def _goal_shapes_match(space: gym.Space) -> bool:
    return (
        isinstance(space, gym.spaces.Dict)
        and all(goal_key in space.spaces for goal_key in GOAL_KEYS)
        and space["achieved_goal"].shape == space["desired_goal"].shape
    )


def goal_functions(vec_env: VecEnv) -> tuple[Callable, Callable | None]:
    """The env's vectorised `compute_reward` and (if it has one) `compute_terminated`, read through the wrapper
    chain so that a reward wrapper's convention is the one HER relabels with."""
    compute_reward = vec_env.get_attr("compute_reward", indices=[0])[0]
    try:
        return compute_reward, vec_env.get_attr("compute_terminated", indices=[0])[0]
    except AttributeError:
        return compute_reward, None


def check_goal_env(vec_env: VecEnv, key: str, who: str) -> None:
    """Raise a ConfigError naming `key` if the env is not a goal env with a vectorised `compute_reward`.

    HER and HAC recompute rewards of relabelled goals in one `compute_reward` call per batch, so it is called
    here once on a small batch of goal pairs: a scalar or a wrongly shaped answer would otherwise turn into
    wrong rewards, or an error deep inside the first gradient step.
    """
    unwrapped = vec_env.get_attr("unwrapped", indices=[0])[0]
    name = unwrapped.spec.id if unwrapped.spec else type(unwrapped).__name__
    space = vec_env.observation_space
    if not (isinstance(space, gym.spaces.Dict) and all(goal_key in space.spaces for goal_key in GOAL_KEYS)):
        raise ConfigError(
            key,
            f"{who} needs a goal env (Dict observation with {', '.join(GOAL_KEYS)} and compute_reward); "
            f"{name} is not one",
        )
    if not callable(getattr(unwrapped, "compute_reward", None)):
        raise ConfigError(
            key,
            f"{who} needs the goal env method compute_reward(achieved_goal, desired_goal, info), vectorised over "
            f"a batch of goals; {name} has a goal observation but no compute_reward",
        )
    _check_vectorised_reward(goal_functions(vec_env)[0], space, key, name)


def _check_vectorised_reward(compute_reward: Callable, space: gym.spaces.Dict, key: str, name: str) -> None:
    """Call `compute_reward` as HER does, on a batch of goal pairs drawn from copies of the goal spaces (the
    env's own spaces and random generators are left untouched)."""
    achieved, desired = (_goal_batch(space[goal_key], seed) for seed, goal_key in enumerate(GOAL_KEYS[1:]))
    expected = (REWARD_PROBE_BATCH,)
    infos = [{} for _ in range(REWARD_PROBE_BATCH)]
    try:
        reward = np.asarray(compute_reward(achieved, desired, infos))
    except Exception as error:  # user code: any failure on a batch is bad input
        raise ConfigError(
            key,
            f"{name}.compute_reward failed on a batch of {REWARD_PROBE_BATCH} goal pairs ({type(error).__name__}: "
            f"{error}); it must be vectorised: goals of shape (batch, ...) in, rewards of shape (batch,) out",
        ) from None
    if reward.shape != expected:
        raise ConfigError(
            key,
            f"{name}.compute_reward answered a batch of {REWARD_PROBE_BATCH} goal pairs with shape {reward.shape}; "
            f"it must be vectorised: one reward per pair, shape {expected}",
        )


def _goal_batch(goal_space: gym.spaces.Space, seed: int) -> np.ndarray:
    probe = copy.deepcopy(goal_space)
    probe.seed(seed)
    return np.stack([probe.sample() for _ in range(REWARD_PROBE_BATCH)])
