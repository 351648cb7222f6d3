"""Algorithm registry: how each `algorithm=<name>` config group becomes an SB3-style model for an env."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gymnasium import spaces
from omegaconf import DictConfig
from stable_baselines3 import DDPG, DQN, PPO, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from ideas_baselines.her import HindsightReplayBuffer
from ideas_baselines.sac import FusedSAC
from interface.algorithm_spec import AlgorithmSpec
from interface.envs import check_goal_env, goal_functions
from interface.hac import HAC_SPEC
from interface.learner_config import her_buffer_kwargs, learner_kwargs
from util.errors import ConfigError

# SAC is SB3's with a fused gradient step (same losses, API and save files; see ideas_baselines/sac).
LEARNERS: dict[str, type[BaseAlgorithm]] = {"sac": FusedSAC, "td3": TD3, "ddpg": DDPG, "dqn": DQN, "ppo": PPO}
HER_MODEL_CLASSES = ("sac", "td3", "ddpg", "dqn")


def _check_action_space(learner: str, env: VecEnv, key: str) -> None:
    if learner == "dqn" and not isinstance(env.action_space, spaces.Discrete):
        raise ConfigError(key, f"dqn needs a Discrete action space, the env has {env.action_space}", ["sac", "td3", "ddpg"])
    if learner in ("sac", "td3", "ddpg") and not isinstance(env.action_space, spaces.Box):
        raise ConfigError(key, f"{learner} needs a continuous (Box) action space, the env has {env.action_space}", ["dqn", "ppo"])


def _construct(learner: str, kwargs: dict[str, Any], env: VecEnv, seed: int, device: str) -> BaseAlgorithm:
    try:
        return LEARNERS[learner](env=env, seed=seed, device=device, verbose=0, **kwargs)
    except TypeError as error:
        raise ConfigError("algorithm.learner", f"{learner} rejected its settings: {error}") from None


def _build_plain(name: str) -> Callable[[DictConfig, VecEnv, int, str], BaseAlgorithm]:
    def build(algorithm_cfg: DictConfig, env: VecEnv, seed: int, device: str) -> BaseAlgorithm:
        _check_action_space(name, env, "algorithm")
        kwargs = learner_kwargs(algorithm_cfg, name, env.action_space, env.observation_space)
        return _construct(name, kwargs, env, seed, device)

    return build


def _her_model_class(algorithm_cfg: DictConfig) -> str:
    model_class = algorithm_cfg.get("model_class")
    if model_class not in HER_MODEL_CLASSES:
        raise ConfigError("algorithm.model_class", f"unknown value {model_class!r}", HER_MODEL_CLASSES)
    return str(model_class)


def _build_her(algorithm_cfg: DictConfig, env: VecEnv, seed: int, device: str) -> BaseAlgorithm:
    learner = _her_model_class(algorithm_cfg)
    buffer_kwargs = her_buffer_kwargs(algorithm_cfg)
    check_goal_env(env, "env", "algorithm=her")
    _check_action_space(learner, env, "algorithm.model_class")
    kwargs = learner_kwargs(algorithm_cfg, learner, env.action_space, env.observation_space)
    kwargs["replay_buffer_class"] = HindsightReplayBuffer
    kwargs["replay_buffer_kwargs"] = buffer_kwargs
    model = _construct(learner, kwargs, env, seed, device)
    _attach_her(model, env)
    return model


def _attach_her(model: BaseAlgorithm, env: VecEnv) -> None:
    buffer = getattr(model, "replay_buffer", None)
    if isinstance(buffer, HindsightReplayBuffer):
        buffer.attach_goal_functions(*goal_functions(env))


ALGORITHMS: dict[str, AlgorithmSpec] = {
    "her": AlgorithmSpec("her", lambda cfg: LEARNERS[_her_model_class(cfg)], _build_her, _attach_her),
    "hac": HAC_SPEC,
    **{
        name: AlgorithmSpec(name, (lambda cfg, name=name: LEARNERS[name]), _build_plain(name))
        for name in ("sac", "td3", "ddpg", "dqn", "ppo")
    },
}


def overlaps_env_step(spec: AlgorithmSpec, algorithm_cfg: DictConfig) -> bool:
    """True if the configured learner can train while its env steps in another process (see `env_subprocess`)."""
    return issubclass(spec.model_class(algorithm_cfg), FusedSAC)


def get_algorithm(name: str) -> AlgorithmSpec:
    """Look up an algorithm by its config group name; ConfigError lists the known ones."""
    if name not in ALGORITHMS:
        raise ConfigError("algorithm", f"unknown algorithm {name!r}", sorted(ALGORITHMS))
    return ALGORITHMS[name]
