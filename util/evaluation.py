"""Test rollouts: deterministic episodes on a separate env, with the metrics the contract names."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from util.model_protocol import EpisodicModel


def info_success(info: dict[str, Any]) -> float | None:
    """The goal env's `is_success` flag in a step's info as 0.0/1.0 (bool, array or number), None if absent."""
    if "is_success" not in info:
        return None
    return float(np.asarray(info["is_success"]).item())


def evaluate(model: BaseAlgorithm, train_env: VecEnv, eval_env: VecEnv, n_episodes: int) -> dict[str, float]:
    """Run `n_episodes` deterministic episodes on the first env of `eval_env`.

    Observation-normalisation statistics are copied from `train_env` first (and never updated by testing).
    Returns `test/success_rate` (fraction of episodes whose last step reported `is_success`),
    `test/mean_reward` and `test/ep_length`.
    """
    if isinstance(eval_env, VecNormalize) and isinstance(train_env, VecNormalize):
        # Copied directly: the two envs' wrapper chains may differ (a subprocess training env).
        eval_env.obs_rms = deepcopy(train_env.obs_rms)
        eval_env.ret_rms = deepcopy(train_env.ret_rms)
    returns, lengths, successes = [], [], []
    observation = eval_env.reset()
    # Learners with per-episode state (HAC's current subgoals) are told where episodes start, as in SB3.
    episode_start = np.ones(1, dtype=bool)
    episode_return, episode_length = 0.0, 0
    while len(returns) < n_episodes:
        action, _ = model.predict(observation, episode_start=episode_start, deterministic=True)
        observation, reward, done, infos = eval_env.step(action)
        episode_start = done
        episode_return += float(reward[0])
        episode_length += 1
        if done[0]:
            if isinstance(model, EpisodicModel) and "terminal_observation" in infos[0]:
                model.observe_episode_end(infos[0]["terminal_observation"])  # HAC judges its subgoals on it
            returns.append(episode_return)
            lengths.append(episode_length)
            successes.append(info_success(infos[0]) or 0.0)
            episode_return, episode_length = 0.0, 0
    return {
        "test/success_rate": float(np.mean(successes)),
        "test/mean_reward": float(np.mean(returns)),
        "test/ep_length": float(np.mean(lengths)),
    }
