"""Turning the `learner`, `per_model_class` and HER keys of an algorithm config into constructor arguments.

Shared by every algorithm built from SB3 learners (plain, HER, each layer of HAC), so that one key means the
same thing everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.noise import NormalActionNoise

from ideas_baselines.her import GOAL_SELECTION_STRATEGIES
from util.errors import ConfigError


def learner_kwargs(
    algorithm_cfg: DictConfig,
    learner: str,
    action_space: spaces.Space,
    observation_space: spaces.Space,
    overrides: dict[str, Any] | None = None,
    overrides_key: str = "overrides",
) -> dict[str, Any]:
    """SB3 constructor kwargs: `learner`, then `per_model_class[learner]`, then `overrides`, merged.

    `action_noise_std` becomes Gaussian action noise; `random_action_prob` is checked to lie in [0, 1] and a bad
    value is reported under the section it came from (`overrides_key` names where `overrides` live in the config);
    `policy: auto` picks MultiInputPolicy for Dict observations and MlpPolicy otherwise.
    """
    per_class = algorithm_cfg.get("per_model_class") or {}
    parts = [algorithm_cfg.get("learner"), per_class.get(learner)]
    containers = [OmegaConf.to_container(part, resolve=True) for part in parts if part]
    merged = OmegaConf.merge(*containers, overrides or {})
    kwargs: dict[str, Any] = OmegaConf.to_container(merged)  # type: ignore[assignment]
    share = kwargs.get("random_action_prob")
    if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1):
        if "random_action_prob" in (overrides or {}):
            section = overrides_key
        elif "random_action_prob" in (per_class.get(learner) or {}):
            section = f"algorithm.per_model_class.{learner}"
        else:
            section = "algorithm.learner"
        raise ConfigError(f"{section}.random_action_prob", f"must be a number in [0, 1], got {share!r}")
    noise_std = kwargs.pop("action_noise_std", None)
    if noise_std:
        n_actions = int(np.prod(action_space.shape))
        kwargs["action_noise"] = NormalActionNoise(np.zeros(n_actions), noise_std * np.ones(n_actions))
    if kwargs.get("policy", "auto") == "auto":
        kwargs["policy"] = "MultiInputPolicy" if isinstance(observation_space, spaces.Dict) else "MlpPolicy"
    return kwargs


def her_buffer_kwargs(algorithm_cfg: DictConfig) -> dict[str, Any]:
    """The HindsightReplayBuffer kwargs from `n_sampled_goal` and `goal_selection_strategy`, checked."""
    strategy = algorithm_cfg.get("goal_selection_strategy")
    if strategy not in GOAL_SELECTION_STRATEGIES:
        raise ConfigError("algorithm.goal_selection_strategy", f"unknown value {strategy!r}", GOAL_SELECTION_STRATEGIES)
    n_sampled_goal = algorithm_cfg.get("n_sampled_goal")
    if isinstance(n_sampled_goal, bool) or not isinstance(n_sampled_goal, int) or n_sampled_goal < 0:
        raise ConfigError("algorithm.n_sampled_goal", f"must be an integer >= 0, got {n_sampled_goal!r}")
    return {"n_sampled_goal": n_sampled_goal, "goal_selection_strategy": strategy}
