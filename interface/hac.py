"""`algorithm=hac`: turns conf/algorithm/hac.yaml into a HierarchicalActorCritic for a goal env."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from omegaconf import DictConfig, ListConfig, OmegaConf
from stable_baselines3.common.vec_env import VecEnv

from ideas_baselines.hac import HacSettings, HierarchicalActorCritic, build_layer_learner
from interface.algorithm_spec import AlgorithmSpec
from interface.envs import check_goal_env
from interface.learner_config import her_buffer_kwargs, learner_kwargs
from interface.learners import HAC_LAYER_CLASSES, LEARNERS
from util.errors import ConfigError


def build_hac(algorithm_cfg: DictConfig, env: VecEnv, seed: int, device: str) -> HierarchicalActorCritic:
    """A fresh hierarchy for `env` from the `algorithm` config; ConfigError names the first bad key."""
    check_goal_env(env, "env", "algorithm=hac")
    _check_reward_convention(env)
    classes = _layer_classes(algorithm_cfg)
    time_scales = _time_scales(algorithm_cfg, len(classes), _max_episode_steps(env))
    per_layer = _per_layer(algorithm_cfg, len(classes))
    low, high = _subgoal_bounds(algorithm_cfg, env)
    buffer_kwargs = her_buffer_kwargs(algorithm_cfg)
    test_perc = algorithm_cfg.get("subgoal_test_perc")
    if isinstance(test_perc, bool) or not isinstance(test_perc, (int, float)) or not 0.0 <= test_perc <= 1.0:
        raise ConfigError("algorithm.subgoal_test_perc", f"must be a probability in [0, 1], got {test_perc!r}")
    assert isinstance(env.observation_space, spaces.Dict)
    radii = _subgoal_radii(algorithm_cfg, len(classes))
    learners = []
    # The config lists layers top first; the hierarchy counts from the lowest layer.
    for index, name in enumerate(reversed(classes)):
        action_space = env.action_space if index == 0 else _subgoal_action_space(low, high, radii[-index])
        if not isinstance(action_space, spaces.Box):
            raise ConfigError("algorithm.layer_classes", f"the env needs a Box action space, has {action_space}")
        position = len(classes) - 1 - index
        where = f"algorithm.per_layer.{position}"
        kwargs = learner_kwargs(algorithm_cfg, name, action_space, env.observation_space, per_layer[position], where)
        kwargs["replay_buffer_kwargs"] = buffer_kwargs
        try:
            learner = build_layer_learner(
                LEARNERS[name].cls, env.observation_space, action_space, kwargs, seed + index, device
            )
        except TypeError as error:
            raise ConfigError("algorithm.learner", f"{name} rejected its settings: {error}") from None
        learners.append(learner)
    settings = HacSettings(
        time_scales=list(reversed(time_scales)),
        subgoal_low=low.tolist(),
        subgoal_high=high.tolist(),
        subgoal_test_perc=float(test_perc),
        end_on_success=bool(algorithm_cfg.get("end_on_success", False)),
        bound_q=bool(algorithm_cfg.get("bound_q", True)),
        seed=seed,
        relative_subgoals=any(radius is not None for radius in radii),
        dense_hindsight=bool(algorithm_cfg.get("dense_hindsight", False)),
        subgoal_threshold=_subgoal_threshold(algorithm_cfg),
    )
    return HierarchicalActorCritic(env, learners, settings)


def _subgoal_radii(algorithm_cfg: DictConfig, n_layers: int) -> list[float | None]:
    """`subgoal_radius` per layer above 0, top first: null (absolute subgoals), one number, or a list."""
    key = "algorithm.subgoal_radius"
    configured = algorithm_cfg.get("subgoal_radius")
    if configured is None:
        return [None] * (n_layers - 1)
    radii = OmegaConf.to_container(configured) if isinstance(configured, ListConfig) else [configured] * (n_layers - 1)
    if len(radii) != n_layers - 1 or not all(
        isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 for r in radii
    ):
        raise ConfigError(
            key, f"must be null, a positive number or {n_layers - 1} positive numbers (top first), got {configured!r}"
        )
    return [float(r) for r in radii]


def _subgoal_threshold(algorithm_cfg: DictConfig) -> float | None:
    """`subgoal_threshold`: null (the env's success test for every layer) or a positive distance."""
    threshold = algorithm_cfg.get("subgoal_threshold")
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold <= 0:
        raise ConfigError("algorithm.subgoal_threshold", f"must be null or a positive distance, got {threshold!r}")
    return float(threshold)


def _subgoal_action_space(low: np.ndarray, high: np.ndarray, radius: float | None) -> spaces.Box:
    """A subgoal layer's actions: points within the subgoal bounds, or offsets within +-radius."""
    if radius is None:
        return spaces.Box(low, high, dtype=np.float32)
    return spaces.Box(-radius, radius, shape=low.shape, dtype=np.float32)


def _check_reward_convention(env: VecEnv) -> None:
    """HAC's subgoal test and Q bounds assume -1 per step and 0 at the goal; reject envs that reward otherwise.

    The env factory already maps sparse 0/+1 goal envs (gymnasium-robotics' mazes) to -1/0, so what is left
    here are dense rewards such as the `...Dense` mazes' exp(-distance).
    """
    compute_reward = env.get_attr("compute_reward", indices=[0])[0]
    goal = np.asarray(env.observation_space["desired_goal"].sample())  # type: ignore[index]
    at_goal = float(np.asarray(compute_reward(goal[None], goal[None], [{}])).reshape(-1)[0])
    if at_goal != 0.0:
        spec = env.get_attr("spec", indices=[0])[0]
        name = spec.id if spec else "the env"
        raise ConfigError(
            "env", f"algorithm=hac needs -1/0 rewards (0 at the goal); {name} gives {at_goal:g} at the goal"
        )


def _layer_classes(algorithm_cfg: DictConfig) -> list[str]:
    classes = algorithm_cfg.get("layer_classes")
    if not OmegaConf.is_list(classes) or len(classes) == 0:
        raise ConfigError(
            "algorithm.layer_classes", f"must be a non-empty list, top layer first, got {classes!r}", HAC_LAYER_CLASSES
        )
    for name in classes:
        if name not in HAC_LAYER_CLASSES:
            raise ConfigError("algorithm.layer_classes", f"unknown layer class {name!r}", HAC_LAYER_CLASSES)
    return [str(name) for name in classes]


def _max_episode_steps(env: VecEnv) -> int | None:
    spec = env.get_attr("spec", indices=[0])[0]
    return None if spec is None else spec.max_episode_steps


def _time_scales(algorithm_cfg: DictConfig, n_layers: int, max_steps: int | None) -> list[int]:
    """The configured time scales (top first) with a -1 filled so their product is the episode length."""
    key = "algorithm.time_scales"
    scales = algorithm_cfg.get("time_scales")
    if not OmegaConf.is_list(scales) or len(scales) != n_layers:
        raise ConfigError(key, f"needs one entry per algorithm.layer_classes entry ({n_layers}), got {scales!r}")
    if any(isinstance(h, bool) or not isinstance(h, int) or (h < 1 and h != -1) for h in scales):
        raise ConfigError(
            key, f"entries must be integers >= 1 or -1 (fill from the episode length), got {list(scales)}"
        )
    scales = [int(h) for h in scales]
    if scales.count(-1) > 1:
        raise ConfigError(key, f"at most one entry may be -1, got {scales}")
    if -1 in scales:
        known = int(np.prod([h for h in scales if h != -1]))
        if max_steps is None or max_steps % known != 0:
            raise ConfigError(
                key, f"cannot fill -1: the env's max episode steps ({max_steps}) is not a multiple of {known}"
            )
        scales[scales.index(-1)] = max_steps // known
    return scales


def _per_layer(algorithm_cfg: DictConfig, n_layers: int) -> list[dict[str, Any]]:
    per_layer = algorithm_cfg.get("per_layer") or []
    if len(per_layer) not in (0, n_layers):
        raise ConfigError(
            "algorithm.per_layer", f"needs 0 or {n_layers} entries (top layer first), got {len(per_layer)}"
        )
    return [OmegaConf.to_container(entry, resolve=True) or {} for entry in per_layer] or [{} for _ in range(n_layers)]  # type: ignore[misc]


def _subgoal_bounds(algorithm_cfg: DictConfig, env: VecEnv) -> tuple[np.ndarray, np.ndarray]:
    """Subgoal bounds: configured, else the goal space's if finite, else the env's `goal_bounds()` if it declares
    them, else a gymnasium-robotics maze's map, else a Fetch env's target range."""
    key = "algorithm.subgoal_bounds"
    goal_space = env.observation_space["desired_goal"]  # type: ignore[index]
    configured = algorithm_cfg.get("subgoal_bounds")
    if configured is not None:
        bounds = np.asarray(OmegaConf.to_container(configured), dtype=np.float32)
        if bounds.shape != (2, *goal_space.shape) or np.any(bounds[0] >= bounds[1]):
            raise ConfigError(
                key, f"must be [[low...], [high...]] with low < high, {goal_space.shape} each, got {configured!r}"
            )
        return bounds[0], bounds[1]
    if goal_space.is_bounded():
        return goal_space.low.astype(np.float32), goal_space.high.astype(np.float32)
    unwrapped = env.get_attr("unwrapped", indices=[0])[0]
    declared = getattr(unwrapped, "goal_bounds", None)
    if callable(declared):
        low, high = declared()
        return np.asarray(low, dtype=np.float32), np.asarray(high, dtype=np.float32)
    maze = getattr(unwrapped, "maze", None)
    if maze is not None and hasattr(maze, "x_map_center"):  # gymnasium-robotics mazes: (x, y) over the whole map
        half = np.array([maze.x_map_center, maze.y_map_center], dtype=np.float32)
        return -half, half
    if hasattr(unwrapped, "initial_gripper_xpos") and hasattr(unwrapped, "target_range"):
        center = np.asarray(unwrapped.initial_gripper_xpos[:3]) + np.asarray(getattr(unwrapped, "target_offset", 0.0))
        half = float(unwrapped.target_range)
        return (center - half).astype(np.float32), (center + half).astype(np.float32)
    raise ConfigError(key, "the env's goal space is unbounded; give [[low...], [high...]]")


HAC_SPEC = AlgorithmSpec("hac", lambda cfg: HierarchicalActorCritic, build_hac)
