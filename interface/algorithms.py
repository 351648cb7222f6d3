"""Algorithm registry: how each `algorithm=<name>` config group becomes an SB3-style model for an env."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from omegaconf import DictConfig, OmegaConf
from stable_baselines3 import DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import VecEnv

from ideas_baselines.her import GOAL_SELECTION_STRATEGIES, HindsightReplayBuffer
from interface.envs import check_goal_env, goal_functions
from util.errors import ConfigError

LEARNERS: dict[str, type[BaseAlgorithm]] = {"sac": SAC, "td3": TD3, "ddpg": DDPG, "dqn": DQN, "ppo": PPO}
HER_MODEL_CLASSES = ("sac", "td3", "ddpg", "dqn")


@dataclass(frozen=True)
class AlgorithmSpec:
    """What the experiment needs to know about one algorithm config group.

    :param name: The config group option (`algorithm=<name>`).
    :param learner_name: Which SB3 learner class the config selects.
    :param build: Creates a fresh model for a vectorised env.
    :param after_load: Re-attaches what a saved model cannot carry (e.g. HER's link to the env's reward).
    """

    name: str
    learner_name: Callable[[DictConfig], str]
    build: Callable[[DictConfig, VecEnv, int, str], BaseAlgorithm]
    after_load: Callable[[BaseAlgorithm, VecEnv], None]

    def learner_class(self, algorithm_cfg: DictConfig) -> type[BaseAlgorithm]:
        """The SB3 class of the model this config builds."""
        return LEARNERS[self.learner_name(algorithm_cfg)]

    def load(
        self, algorithm_cfg: DictConfig, path: Path, env: VecEnv, device: str, replay_buffer: Path | None = None
    ) -> BaseAlgorithm:
        """Load a saved model (and its replay buffer, if saved) of this algorithm and bind it to `env`.

        The episode that was running when the buffer was saved is dropped: training resumes with a fresh reset.
        """
        model = self.learner_class(algorithm_cfg).load(path, env=env, device=device)
        if replay_buffer is not None and replay_buffer.exists() and hasattr(model, "load_replay_buffer"):
            model.load_replay_buffer(replay_buffer)
            truncate = getattr(model.replay_buffer, "truncate_last_trajectory", None)
            if truncate is not None:
                truncate()
        self.after_load(model, env)
        return model


def _check_action_space(learner: str, env: VecEnv, key: str) -> None:
    if learner == "dqn" and not isinstance(env.action_space, spaces.Discrete):
        raise ConfigError(key, f"dqn needs a Discrete action space, the env has {env.action_space}", ["sac", "td3", "ddpg"])
    if learner in ("sac", "td3", "ddpg") and not isinstance(env.action_space, spaces.Box):
        raise ConfigError(key, f"{learner} needs a continuous (Box) action space, the env has {env.action_space}", ["dqn", "ppo"])


def _learner_kwargs(algorithm_cfg: DictConfig, learner: str, env: VecEnv) -> dict[str, Any]:
    """The SB3 constructor kwargs: `learner` merged with this learner's entry of `per_model_class`."""
    shared = OmegaConf.to_container(algorithm_cfg.learner, resolve=True)
    per_class = algorithm_cfg.get("per_model_class")
    specific = OmegaConf.to_container(per_class[learner], resolve=True) if per_class and learner in per_class else {}
    kwargs: dict[str, Any] = OmegaConf.to_container(OmegaConf.merge(shared, specific))  # type: ignore[assignment]
    noise_std = kwargs.pop("action_noise_std", None)
    if noise_std:
        n_actions = int(np.prod(env.action_space.shape))
        kwargs["action_noise"] = NormalActionNoise(np.zeros(n_actions), noise_std * np.ones(n_actions))
    policy = kwargs.pop("policy", "auto")
    if policy == "auto":
        policy = "MultiInputPolicy" if isinstance(env.observation_space, spaces.Dict) else "MlpPolicy"
    kwargs["policy"] = policy
    return kwargs


def _construct(learner: str, kwargs: dict[str, Any], env: VecEnv, seed: int, device: str) -> BaseAlgorithm:
    try:
        return LEARNERS[learner](env=env, seed=seed, device=device, verbose=0, **kwargs)
    except TypeError as error:
        raise ConfigError("algorithm.learner", f"{learner} rejected its settings: {error}") from None


def _build_plain(name: str) -> Callable[[DictConfig, VecEnv, int, str], BaseAlgorithm]:
    def build(algorithm_cfg: DictConfig, env: VecEnv, seed: int, device: str) -> BaseAlgorithm:
        _check_action_space(name, env, "algorithm")
        return _construct(name, _learner_kwargs(algorithm_cfg, name, env), env, seed, device)

    return build


def _her_model_class(algorithm_cfg: DictConfig) -> str:
    model_class = algorithm_cfg.get("model_class")
    if model_class not in HER_MODEL_CLASSES:
        raise ConfigError("algorithm.model_class", f"unknown value {model_class!r}", HER_MODEL_CLASSES)
    return str(model_class)


def _build_her(algorithm_cfg: DictConfig, env: VecEnv, seed: int, device: str) -> BaseAlgorithm:
    learner = _her_model_class(algorithm_cfg)
    strategy = algorithm_cfg.get("goal_selection_strategy")
    if strategy not in GOAL_SELECTION_STRATEGIES:
        raise ConfigError("algorithm.goal_selection_strategy", f"unknown value {strategy!r}", GOAL_SELECTION_STRATEGIES)
    n_sampled_goal = algorithm_cfg.get("n_sampled_goal")
    if not isinstance(n_sampled_goal, int) or n_sampled_goal < 0:
        raise ConfigError("algorithm.n_sampled_goal", f"must be an integer >= 0, got {n_sampled_goal!r}")
    check_goal_env(env, "env", "algorithm=her")
    _check_action_space(learner, env, "algorithm.model_class")
    kwargs = _learner_kwargs(algorithm_cfg, learner, env)
    kwargs["replay_buffer_class"] = HindsightReplayBuffer
    kwargs["replay_buffer_kwargs"] = {"n_sampled_goal": n_sampled_goal, "goal_selection_strategy": strategy}
    model = _construct(learner, kwargs, env, seed, device)
    _attach_her(model, env)
    return model


def _attach_her(model: BaseAlgorithm, env: VecEnv) -> None:
    buffer = getattr(model, "replay_buffer", None)
    if isinstance(buffer, HindsightReplayBuffer):
        buffer.attach_goal_functions(*goal_functions(env))


def _nothing_to_attach(model: BaseAlgorithm, env: VecEnv) -> None:
    """Plain SB3 learners carry everything they need in their save file."""


ALGORITHMS: dict[str, AlgorithmSpec] = {
    "her": AlgorithmSpec("her", _her_model_class, _build_her, _attach_her),
    "hac": __import__("interface.hac", fromlist=["HAC_SPEC"]).HAC_SPEC,
    **{
        name: AlgorithmSpec(name, (lambda cfg, name=name: name), _build_plain(name), _nothing_to_attach)
        for name in ("sac", "td3", "ddpg", "dqn", "ppo")
    },
}


def get_algorithm(name: str) -> AlgorithmSpec:
    """Look up an algorithm by its config group name; ConfigError lists the known ones."""
    if name not in ALGORITHMS:
        raise ConfigError("algorithm", f"unknown algorithm {name!r}", sorted(ALGORITHMS))
    return ALGORITHMS[name]
